"""The GPU side: everything that runs inside an engine actor, importing nothing from pipeline/ or jobs/.

- ``api`` and ``row_params``: the contracts with the driver (settings, requests, results, per-row settings);
- ``actor``: the Ray Data UDF around one engine;
- ``engine``, ``runner``, ``graphs``, ``draft_loop``, ``round_graph``: the engine, its model runners and
  CUDA graphs; ``engine_core/``: pure-Python page and scheduling bookkeeping;
- ``decoders/``: one decoding method per file; ``decoding/``: their pure decision rules;
- ``models/``: model families, attention backends, KV pool, loading, tiny checkpoints;
- ``text/``: tokenizer and chat template; ``runtime/``: compile cache, metrics, timing.
"""
