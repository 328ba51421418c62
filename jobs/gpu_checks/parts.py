"""Running a GPU check script's parts: each under inference mode, a failing part reported (its
traceback and an ``error`` row) without hiding the others, the rows written after every part."""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Callable


def run_parts(parts: dict[str, Callable], names: str, args, rows: list[dict], out_file: Path,
              log: Callable[[str], None] = print) -> list[str]:
    """Run ``parts[name](args)`` for each comma-separated name; returns the names that failed."""
    import torch
    failed = []
    for name in names.split(","):
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                parts[name](args)
        except Exception as e:  # report and go on: one broken part must not hide the others
            traceback.print_exc()
            failed.append(name)
            rows.append({"part": name, "error": f"{type(e).__name__}: {e}"[:500]})
        log(f"-- part {name}: {time.perf_counter() - t0:.1f} s")
        out_file.write_text(json.dumps(rows, indent=1, default=str))
    return failed
