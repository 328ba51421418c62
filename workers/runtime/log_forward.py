"""Warnings and errors of an engine actor's process, forwarded to the job monitor (which
deduplicates them for the driver's log)."""
from __future__ import annotations

import logging
import threading


class _MonitorHandler(logging.Handler):
    """Sends this process's warnings and errors to the job monitor (deduplicated there)."""

    def __init__(self, monitor):
        super().__init__(logging.WARNING)
        self.monitor, self._busy = monitor, threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            text = f"{record.levelname.lower()} [{record.name}] {record.getMessage()}"
            self.monitor.report.remote(text[:2000])
        except Exception:  # noqa: BLE001 - logging must never fail a batch
            pass
        finally:
            self._busy.on = False


def forward_logs(monitor) -> None:
    """Route WARNING+ log records and Python warnings of this process to ``monitor``."""
    root = logging.getLogger()
    if any(isinstance(h, _MonitorHandler) for h in root.handlers):
        return
    logging.captureWarnings(True)
    root.addHandler(_MonitorHandler(monitor))
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
