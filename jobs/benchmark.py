"""`simsd bench`: decoders side by side on one GPU, in one process.

Model pairs: published SDAR shapes with random weights (cost) and the shipped reference family
(real acceptance and accuracy). Writes results.parquet, results.json (the latest.json format),
table.md and, where matplotlib is installed, plot.png. `--report DIR` redraws table and plot from
a results.json (e.g. on a machine without a GPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PAIRS = {  # name -> (target shape, draft shape)
    "sdar-8b-shape": ("sdar-8b", "sdar-1.7b"),
    "sdar-4b-shape": ("sdar-4b", "sdar-1.7b"),
    "sdar-1.7b-shape": ("sdar-1.7b", None),
    "sdar-30b-a3b-shape": ("sdar-30b-a3b", "sdar-1.7b"),
}
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "models" / "reference"


def parse_args(argv):
    p = argparse.ArgumentParser(allow_abbrev=False, prog="simsd bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", choices=["full", "shapes", "reference", "reference-b1", "quick"], default="full",
                   help="full: the committed matrix (= shapes + reference); shapes: random-weight SDAR "
                        "shapes only; reference: the shipped family only; quick: a smoke test")
    p.add_argument("--out", default="bench-output", help="directory for results (created)")
    p.add_argument("--prompt-len", type=int, default=256, help="prompt tokens for random-weight pairs")
    p.add_argument("--max-new", type=int, default=64, help="tokens generated per sequence")
    p.add_argument("--reference-problems", type=int, default=64,
                   help="held-out arithmetic problems per reference configuration")
    p.add_argument("--device", default="cuda")
    p.add_argument("--report", metavar="DIR", help="only redraw table.md/plot.png from DIR/results.json")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="with --report: first combine these runs' results.json into DIR/results.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        from jobs.bench.report import merge_results, write_report
        if args.merge:
            merge_results([Path(d) for d in args.merge], Path(args.report))
        write_report(Path(args.report))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("simsd bench: error: needs a CUDA GPU (use --device cpu only for a smoke test)", file=sys.stderr)
        return 2
    from jobs.bench.matrix import run_matrix
    from jobs.bench.report import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    doc = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "commit": _commit(), "command": "simsd bench " + " ".join(sys.argv[1:] if argv is None else argv),
           "torch": torch.__version__, "wall_s": 0.0, "records": []}

    def save(records):  # after every configuration, so an interrupted run keeps what it measured
        doc.update(records=records, wall_s=time.time() - started)
        (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))

    save(run_matrix(args, PAIRS, REFERENCE_DIR, log=lambda msg: print(msg, flush=True), save=save))
    write_report(out)
    print((out / "table.md").read_text())
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
