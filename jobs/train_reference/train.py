"""The training loop: all three models step on the same batches, in two phases.

Phase 1: autoregressive pretraining of all three models. Phase 2: block-diffusion training of
``target`` and ``draft``; ``draft-ar`` keeps training autoregressively on the same clean rows at
half the learning rate. Each phase runs for its step count, or else its time budget.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch

from .data import Rows, mixed_batch
from .losses import ar_loss, ar_visible, diffusion_inputs, diffusion_loss, diffusion_visible
from .settings import Settings


def lr_at(p: float, peak: float, warmup: float = 0.03) -> float:
    if p < warmup:
        return peak * (p / warmup)
    q = min(1.0, (p - warmup) / (1 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))


class Trainer:
    """The models, one AdamW each, and the seeded batch generator, on one device."""

    def __init__(self, models: dict, s: Settings, arith: Rows, code: Rows, mask_id: int, seed: int, device, log):
        self.models, self.s, self.arith, self.code = models, s, arith, code
        self.mask_id, self.device, self.log = mask_id, device, log
        self.opts = {name: torch.optim.AdamW(m.parameters(), lr=s.lr, betas=(0.9, 0.95),
                                             weight_decay=s.weight_decay, fused=device.type == "cuda")
                     for name, m in models.items()}
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    def update(self, name: str, loss: torch.Tensor, lr: float) -> None:
        for g in self.opts[name].param_groups:
            g["lr"] = lr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), 1.0)
        self.opts[name].step()
        self.opts[name].zero_grad(set_to_none=True)

    def run(self) -> dict:
        """Both phases; ``{phase: {"steps", "seconds"}}``."""
        return {phase: self.run_phase(phase) for phase in ("ar", "diffusion")}

    def run_phase(self, phase: str) -> dict:
        s = self.s
        budget = s.ar_seconds if phase == "ar" else s.diff_seconds
        steps = s.ar_steps if phase == "ar" else s.diff_steps
        step_fn = self.ar_step if phase == "ar" else self.diffusion_step
        t0, step, acc = time.time(), 0, {}
        while True:
            p = step / steps if steps else (time.time() - t0) / budget
            if steps and step >= steps or p >= 1:
                break
            if steps and time.time() - t0 > budget:
                break
            lr = lr_at(p, s.lr)
            for k, v in step_fn(lr).items():
                acc[k] = acc.get(k, 0.0) + v
            step += 1
            if step % s.log_every == 0:
                self.log(f"{phase} step {step} p={p:.2f} lr={lr:.2e} " + " ".join(
                    f"{k}={float(v) / s.log_every:.3f}" for k, v in acc.items()))
                acc = {}
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.log(f"{phase} phase done: {step} steps in {time.time() - t0:.1f}s")
        return {"steps": step, "seconds": round(time.time() - t0, 1)}

    def ar_step(self, lr: float) -> dict:
        s = self.s
        ids, pos, doc, _ = mixed_batch(self.arith, self.code, s.ar_batch, s.ar_code_frac, self.gen, self.device)
        vis = ar_visible(doc)
        losses = {}
        for name in self.models:
            with self.autocast():
                loss = ar_loss(self.models[name], ids, pos, doc, vis)
            self.update(name, loss, lr)
            losses[name] = loss.detach()
        return losses

    def diffusion_step(self, lr: float) -> dict:
        s = self.s
        ids, pos, doc, tgt = mixed_batch(self.arith, self.code, s.diff_batch, s.diff_code_frac, self.gen, self.device)
        vis2 = diffusion_visible(doc, pos, s.block)
        inp, pos2, masked = diffusion_inputs(ids, pos, tgt, self.mask_id, s.mask_eps, self.gen)
        losses = {}
        for name in ("target", "draft"):
            with self.autocast():
                loss = diffusion_loss(self.models[name], inp, pos2, vis2, ids, masked)
            self.update(name, loss, lr)
            losses[name] = loss.detach()
        # the AR draft keeps training autoregressively on the same clean rows
        with self.autocast():
            loss = ar_loss(self.models["draft-ar"], ids, pos, doc, ar_visible(doc))
        self.update("draft-ar", loss, lr * 0.5)
        losses["draft-ar"] = loss.detach()
        return losses
