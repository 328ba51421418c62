"""Where an engine actor's model load goes, step by step, in a fresh process: imports (torch,
transformers), the tokenizer (twice: the second shows what the first paid for imports), what
importing AutoTokenizer would add, the CUDA context and the weights. Prints one JSON line.

Run: python -m jobs.gpu_checks.load_probe [model_dir]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference" / "target"


def main(argv=None) -> int:
    model_dir = (argv or sys.argv[1:] or [str(REFERENCE)])[0]
    times, last = {}, time.perf_counter()

    def mark(name):
        nonlocal last
        now = time.perf_counter()
        times[name] = round(now - last, 3)
        last = now

    import torch
    mark("import_torch")
    import transformers  # noqa: F401
    mark("import_transformers")
    from workers.text.tokenizer import load_tokenizer
    mark("import_tokenizer_module")
    load_tokenizer(model_dir)
    mark("tokenizer_first")
    load_tokenizer(model_dir)
    mark("tokenizer_second")
    from transformers import AutoTokenizer  # noqa: F401 - what the product no longer imports
    mark("import_autotokenizer_after")
    if torch.cuda.is_available():
        torch.cuda.init()
        torch.zeros(1, device="cuda")
    mark("cuda_context")
    from workers.models import load_model
    mark("import_models")
    load_model(model_dir, "cuda" if torch.cuda.is_available() else "cpu", "auto")
    mark("weights")
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
