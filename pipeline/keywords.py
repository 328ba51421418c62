"""Messages of the Python API in Python terms: ``draft_remasking='sequential'``, not CLI flags.

The job config's checks speak to `simsd generate` users (``--draft-remasking sequential``);
``simsd.LLM`` and ``build_processor`` re-word them for callers who pass keyword arguments.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import fields

from .errors import ConfigError

_VALUE = r"(?P<value>'[^']*'|[\w./+-]+(?::[\w./+-]+)*)"


def as_keywords(message: str) -> str:
    """'--draft-remasking sequential: ...' -> "draft_remasking='sequential': ..."; a flag without a
    value becomes ``name=``; booleans ``name=True``. Only the job config's own flags are rewritten."""
    flags = _flags()
    pattern = r"--(?P<flag>[a-z][a-z0-9-]*)(?: " + _VALUE + r"(?=[\s,;:)]|$))?"

    def keyword(match: re.Match) -> str:
        name = match.group("flag").replace("-", "_")
        if name not in flags:
            return match.group(0)
        if flags[name]:  # a boolean switch: no value follows
            return f"{name}=True" + ("" if match.group("value") is None else " " + match.group("value"))
        value = match.group("value")
        if value is None:  # "--target: ..." names the setting; "pass --id-column" asks for a value
            return name if message[match.end():match.end() + 1] == ":" else f"{name}="
        if value in _WORDS:
            return f"{name} {value}"
        return f"{name}={_literal(value)}"
    return re.sub(pattern, keyword, message)


# Words that follow a flag in prose, never a value ("pass --overwrite to ...", "--n must be ...").
_WORDS = frozenset("a an and are as at be but by can cannot changes does for from gives has holds in is it must "
                   "needs not of on or the to was were when where which with without".split())


@contextmanager
def keyword_errors():
    """Re-raise a ConfigError from the block with its message in keyword terms."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(as_keywords(str(err))) from None


def _flags() -> dict[str, bool]:
    from .config import GenerateConfig

    return {f.name: isinstance(f.default, bool) for f in fields(GenerateConfig)}


def _literal(value: str) -> str:
    if value.startswith("'"):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return repr(value)
