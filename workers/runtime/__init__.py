"""Process-level services of an engine actor, outside the decoding itself: where compiled kernels
are cached (``compile_cache``), the live Ray metrics it exports (``metrics``) and the wall time
per decoding phase it returns as data (``timing``)."""
