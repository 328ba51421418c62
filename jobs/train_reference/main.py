"""``python -m jobs.train_reference``: parse the flags, build the data, train, save, evaluate.

The steps live in this package's modules: settings (run sizes), data (tokenizer, packed rows),
model (configs, init), losses, train (the loop), export (checkpoints), quick_eval (accuracy,
forward time).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline import reference_data as rd

from .data import build_data
from .export import export_parts, save_checkpoint
from .model import init_model, model_config, num_bytes_bf16
from .quick_eval import evaluate, time_forward
from .settings import ModelShape, Settings, small_settings, toy_settings
from .train import Trainer


def parse_args(argv):
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="simsd train-reference", description=_DESCRIPTION)
    ap.add_argument("--out", default="models/reference", help="output directory (target/, draft/, draft-ar/)")
    ap.add_argument("--scale", choices=["full", "small", "toy"], default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--ar-seconds", type=float)
    ap.add_argument("--diff-seconds", type=float)
    ap.add_argument("--ar-steps", type=int)
    ap.add_argument("--diff-steps", type=int)
    ap.add_argument("--n-problems", type=int)
    ap.add_argument("--eval-n", type=int)
    ap.add_argument("--export", default=None, help="also write the checkpoints as tar parts here")
    ap.add_argument("--time-forwards", action="store_true", help="time 100 batch-1 forwards per model")
    return ap.parse_args(argv)


_DESCRIPTION = "Train the reference model family (SDAR-format target and draft, Qwen3-format AR draft)."


def settings_from(args) -> Settings:
    """The scale's Settings with the flags that override it; a step count alone lifts the time budget."""
    s = {"toy": toy_settings, "small": small_settings, "full": Settings}[args.scale]()
    for name in ("ar_seconds", "diff_seconds", "ar_steps", "diff_steps", "n_problems", "eval_n"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if args.ar_steps is not None and args.ar_seconds is None:
        s.ar_seconds = 1e9
    if args.diff_steps is not None and args.diff_seconds is None:
        s.diff_seconds = 1e9
    return s


class _Log:
    """Timestamped progress lines, printed and kept for train_log.txt."""

    def __init__(self):
        self.start, self.lines = time.time(), []

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.start:7.1f}s] {msg}"
        print(line, flush=True)
        self.lines.append(line)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s = settings_from(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    build_dir = Path(tempfile.mkdtemp(prefix="train_reference_"))
    tok, special, arith, code = build_data(s, build_dir, args.seed, log)
    vocab = len(tok)
    cfgs = {
        "target": model_config(s.target, "sdar", s, special, vocab),
        "draft": model_config(s.draft, "sdar", s, special, vocab),
        "draft-ar": model_config(s.draft_ar, "qwen3", s, special, vocab),
    }
    models = {name: init_model(cfg, args.seed + i, device) for i, (name, cfg) in enumerate(cfgs.items())}
    sizes = {name: num_bytes_bf16(m) for name, m in models.items()}
    log("models: " + ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in sizes.items())
        + f", total {sum(sizes.values()) / 1e6:.2f} MB (bf16)")
    stats = Trainer(models, s, arith.to(device), code.to(device), special["<|MASK|>"], args.seed, device, log).run()

    # Save (then export) before evaluating, so a late failure still leaves the checkpoints.
    for name, m in models.items():
        save_checkpoint(m, cfgs[name], build_dir / "tokenizer", out / name, special)
    if args.export:
        export_parts(out, list(models), Path(args.export))
    log(f"saved to {out}")

    results = {"settings": {k: (v.__dict__ if isinstance(v, ModelShape) else v) for k, v in s.__dict__.items()},
               "sizes_bytes_bf16": sizes, "train": stats, "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "eval": evaluate_all(models, tok, special, s, device, log)}
    if args.time_forwards:
        tf = {name: time_forward(out / name, device) for name in models}
        results["forward_seconds"] = tf
        log("forward (batch 1, 4 tokens over 256 cached): " + ", ".join(
            f"{k} {v * 1e3:.3f} ms" for k, v in tf.items()) + f"; target/draft {tf['target'] / tf['draft']:.2f}x")
    results["total_seconds"] = round(time.time() - log.start, 1)
    log(f"total {results['total_seconds']}s")
    write_summary(out, results, log.lines, args.export)
    return results


def evaluate_all(models: dict, tok, special: dict, s: Settings, device, log) -> dict:
    """Each model's exact-match accuracy on held-out problems, with a few sample outputs."""
    problems = rd.heldout_problems(s.eval_n)
    stop = {special["<|im_end|>"], special["<|endoftext|>"]}
    results = {}
    for name, m in models.items():
        t0 = time.time()
        acc, samples = evaluate(m, tok, problems, diffusion=name != "draft-ar", block=s.block,
                                mask_id=special["<|MASK|>"], stop_ids=stop, max_new=s.max_new_tokens, device=device)
        results[name] = {"accuracy": acc, "n": len(problems), "samples": samples}
        log(f"eval {name}: {acc * 100:.1f}% exact match on {len(problems)} held-out problems "
            f"({time.time() - t0:.1f}s)")
    return results


def write_summary(out: Path, results: dict, log_lines: list[str], export: str | None) -> None:
    (out / "train_summary.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "train_log.txt").write_text("\n".join(log_lines) + "\n")
    if export:
        for f in ("train_summary.json", "train_log.txt"):
            (Path(export) / f).write_bytes((out / f).read_bytes())
