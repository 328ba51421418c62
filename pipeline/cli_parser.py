"""The argparse parser every simsd command uses: no silent abbreviations, "did you mean" for typos.

argparse accepts any unique prefix of a flag by default (`--max-new-token` for
`--max-new-tokens`), which hides typos that become real flags later; ``allow_abbrev=False``
turns that off. An unknown flag is answered with the closest known ones. Errors raise
``ConfigError`` (one error path: the command prints it and exits 2) instead of exiting here.
"""
from __future__ import annotations

import argparse
import difflib
import re


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        from .errors import ConfigError

        raise ConfigError(f"{with_suggestions(message, self._known_flags())} (see {self.prog} --help)")

    def _known_flags(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings if s.startswith("--")]


def with_suggestions(message: str, known: list[str]) -> str:
    """'unrecognized arguments: --max-new-token 5' -> '... --max-new-token (did you mean --max-new-tokens?) 5'."""
    if not message.startswith("unrecognized arguments"):
        return message

    def suggest(match: re.Match) -> str:
        flag = match.group(0)
        close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=2, cutoff=0.6)
        return f"{flag} (did you mean {' or '.join(close)}?)" if close else flag
    return re.sub(r"(?<!\S)--[\w-]+(=\S*)?", suggest, message)
