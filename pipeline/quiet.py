"""Quiet by default: known harmless warnings are filtered where they are raised (the driver and
every engine actor call ``install``), and Ray's per-operator progress block and INFO chatter are
replaced by one progress line (pipeline/progress.py). ``--verbose`` shows everything.
"""
from __future__ import annotations

import logging
import warnings

# (category, message regex, why it is harmless)
KNOWN_HARMLESS = (
    (FutureWarning, r"`rope_scaling` is deprecated",
     "transformers, when the tokenizer loader reads an SDAR/Qwen3 config.json; our loader reads rope "
     "settings itself (workers/models/config.py)"),
)
# (logger, message substring, why it is harmless)
KNOWN_HARMLESS_LOGS = (
    ("ray.data.dataset", "does not have any available CPUs",
     "Ray Data samples free CPUs while the engine actors hold theirs and the read/write task holds "
     "the one kept for I/O (pipeline/driver.py leaves it free); the job is not starved, and a job "
     "that really cannot progress is failed by the watchdog with the starved resource named"),
)
# Loggers whose INFO lines (execution plan, "Started a local Ray instance", per-operator progress)
# repeat what the progress line and the start-up message already say.
QUIET_LOGGERS = {"ray": logging.WARNING, "ray.data": logging.WARNING,
                 # "Progress bars disabled" (we print our own line instead)
                 "ray.data._internal.progress": logging.ERROR,
                 # "Dataset ... execution finished", "Data sink Parquet finished": the summary says it
                 "ray.data._internal.execution.streaming_executor": logging.WARNING,
                 "ray.data.dataset": logging.WARNING}


def install(verbose: bool) -> None:
    """Filter the known harmless warnings in this process (idempotent); no-op with ``verbose``."""
    if verbose:
        return
    for category, message, _ in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_ray_logs(verbose: bool) -> None:
    """After ``import ray``: Ray and Ray Data at WARNING, Ray Data's progress bars off."""
    if verbose:
        return
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, text, _ in KNOWN_HARMLESS_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class _DropMessage(logging.Filter):
    """Drops records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
