"""Device availability and device-only settings, checked before Ray starts (exit 2 in seconds).

Without this, `--device cuda` on a machine with no GPU starts Ray, waits out
`--placement-timeout-s` for GPUs that never come, and fails with Ray's traceback; and a CUDA-only
attention backend on CPU runs silently. What can be told before Ray:

- a job on a private local Ray (no --address, no RAY_ADDRESS) and ``simsd.LLM`` run on this
  machine, so its GPUs are what ``torch.cuda.is_available()`` says;
- a Ray already initialised in this process (notebooks, ``build_processor``) reports its GPUs;
- a job joining a cluster (--address / RAY_ADDRESS) is judged by the cluster, which the driver
  may not be part of: only settings contradicting ``--device cpu`` are refused there.
"""
from __future__ import annotations

import os
import sys

from .config import ConfigError

CUDA_ONLY_KERNELS = ("triton",)  # values of --attention and --layer-kernels


def check_device(config, in_process: bool = False) -> None:
    """Raise ConfigError when the device the job asks for is not there, or a setting needs a
    device the job will not run on. ``in_process``: the engine runs here (``simsd.LLM``)."""
    gpus = _known_gpus(config, in_process)
    if config.device == "cuda" and gpus == 0:
        raise ConfigError("--device cuda, but " + _where_no_gpu(config, in_process) + "; use --device cpu (or auto), "
                          "or --address a Ray cluster with GPUs")
    device = config.device if config.device != "auto" else (None if gpus is None else ("cuda" if gpus else "cpu"))
    for flag in ("attention", "layer_kernels"):
        value = getattr(config, flag)
        if value in CUDA_ONLY_KERNELS and device == "cpu":
            why = "--device cpu was given" if config.device == "cpu" else _where_no_gpu(config, in_process)
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} {value} runs only on CUDA GPUs, but this job runs on CPU ({why}); "
                              f"use {name} auto or torch")


def _known_gpus(config, in_process: bool) -> int | None:
    """GPUs the engine can use, when that is known before Ray starts; None when a cluster decides."""
    if in_process:
        return _local_gpus()
    ray = sys.modules.get("ray")  # not imported: certainly not initialised (and importing it is slow)
    if ray is not None and ray.is_initialized():
        return int(ray.cluster_resources().get("GPU", 0))
    if config.address or os.environ.get("RAY_ADDRESS"):
        return None
    return _local_gpus()


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install is no usable GPU
        return 0


def _where_no_gpu(config, in_process: bool) -> str:
    ray = sys.modules.get("ray")
    if not in_process and ray is not None and ray.is_initialized():
        return "the Ray instance initialised in this process has no GPU"
    return ("this machine has no usable CUDA GPU (torch.cuda.is_available() is False)"
            + ("" if in_process else " and the job runs on a private local Ray"))
