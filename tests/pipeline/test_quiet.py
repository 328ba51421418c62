"""Known harmless Ray Data log lines are dropped by default; other lines of that logger pass."""
import logging

from pipeline.quiet import KNOWN_HARMLESS_LOGS, _DropMessage, quiet_ray_logs


def _passes(logger: logging.Logger, message: str) -> bool:
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)
    return bool(logger.filter(record))


def test_the_cpu_sampling_warning_is_dropped_once_quiet():
    name, text, _ = KNOWN_HARMLESS_LOGS[0]
    logger = logging.getLogger(name)
    harmless = "Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang"
    earlier = [f for f in logger.filters if isinstance(f, _DropMessage)]
    for f in earlier:  # an in-process job earlier in the session may have installed it
        logger.removeFilter(f)
    try:
        assert _passes(logger, harmless)
        quiet_ray_logs(verbose=False)
        quiet_ray_logs(verbose=False)  # idempotent: one filter, not two
        assert sum(isinstance(f, _DropMessage) for f in logger.filters) == 1
        assert not _passes(logger, harmless)
        assert _passes(logger, "a different warning still shows")
    finally:
        for f in [f for f in logger.filters if isinstance(f, _DropMessage)]:
            logger.removeFilter(f)
        for f in earlier:
            logger.addFilter(f)
