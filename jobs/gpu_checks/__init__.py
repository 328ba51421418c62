"""Standalone GPU checks and microbenchmarks (run on the GPU machine; CPU smoke modes for CI)."""
