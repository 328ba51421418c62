"""Decoders: the code that drives a model runner's forwards for one decoding method (vanilla block
diffusion, SimSD, autoregressive) and keeps its per-slot state. Every decision they make (which
positions to reveal, what to accept, which token to sample, which layout to attend with) is a pure
function from ``workers.decoding``, which imports no runner."""
