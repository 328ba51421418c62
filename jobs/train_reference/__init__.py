"""Train the reference model family (SDAR-format target and draft, Qwen3-format AR draft).

Everything is offline and seeded: the data is the running interpreter's standard library source
plus generated arithmetic word problems (``pipeline.reference_data``); a byte-level BPE tokenizer is
trained on it; then three models are trained in one loop:

* ``target`` and ``draft`` (``model_type: sdar``, block length 4): autoregressive pretraining
  first, then block-diffusion training the way SDAR is trained (``losses``).
* ``draft-ar`` (``model_type: qwen3``): autoregressive only.

Sequences are packed from whole documents, each starting at a block boundary with its own
positions from 0 and attending only inside itself, so training sees exactly the layouts decoding
sees (blocks aligned to position 0 of the prompt).

One module per concern: ``settings`` (run sizes), ``data`` (tokenizer, packed rows, batches),
``model`` (configs, init), ``losses``, ``train`` (the loop), ``export`` (checkpoints, tar parts),
``quick_eval`` (held-out accuracy, forward time), ``main`` (the flags and the order of the steps).

Usage::

    python -m jobs.train_reference --out models/reference            # full scale, one GPU
    python -m jobs.train_reference --scale toy --out /tmp/ref         # a few CPU steps (tests)
"""
from .main import main

__all__ = ["main"]
