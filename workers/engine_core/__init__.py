"""Host-side engine bookkeeping in pure Python (no torch): which pages each sequence owns and
which sequences run, wait or get preempted."""
from .block_manager import BlockManager
from .scheduler import Scheduler

__all__ = ["BlockManager", "Scheduler"]
