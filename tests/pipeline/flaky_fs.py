"""A local filesystem behind a test protocol, ``flaky://``, whose opens fail with a transient
error a set number of times: stands in for an object store having a bad minute.

Failures are tokens (files) in ``fail_dir``: ``driver-read-*``, ``driver-write-*`` are spent by the
process whose pid is ``driver_pid``, ``worker-read-*``/``worker-write-*`` by every other process
(Ray Data's read and write tasks). Removing a token file is atomic, so each token fails exactly
one open across all processes. Imported by Ray workers when they unpickle the filesystem, which
registers the protocol there too.
"""
from __future__ import annotations

import os
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "flaky"
ERROR = "Connection reset by peer (flaky test filesystem)"


class FlakyFileSystem(LocalFileSystem):
    protocol = (PROTOCOL,)
    root_marker = "/"

    def __init__(self, fail_dir: str = "", driver_pid: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.fail_dir, self.driver_pid = fail_dir, int(driver_pid)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        self._maybe_fail("write" if any(c in mode for c in "wax") else "read")
        return super()._open(path, mode=mode, **kwargs)

    def _maybe_fail(self, kind: str) -> None:
        if not self.fail_dir:
            return
        who = "driver" if os.getpid() == self.driver_pid else "worker"
        for token in sorted(Path(self.fail_dir).glob(f"{who}-{kind}-*")):
            try:
                token.unlink()
            except FileNotFoundError:  # another process spent it
                continue
            raise OSError(ERROR)


def make_tokens(fail_dir: Path, **counts: int) -> None:
    """make_tokens(d, driver_read=2, worker_write=3, ...)"""
    fail_dir.mkdir(parents=True, exist_ok=True)
    for name, n in counts.items():
        for i in range(n):
            (fail_dir / f"{name.replace('_', '-')}-{i}").touch()


def tokens_left(fail_dir: Path) -> list[str]:
    return sorted(p.name for p in fail_dir.iterdir())


fsspec.register_implementation(PROTOCOL, FlakyFileSystem, clobber=True)
