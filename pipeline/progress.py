"""One progress line per interval (rows, tokens/s, acceptance, ETA), instead of Ray Data's
multi-line operator block, which repeats every 10 s in a non-interactive log.

The figures come from the run's staged output files (each written whole by Ray Data when a batch
block is done), so they count rows that are really written, at file granularity.
"""
from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_COLUMNS = ["num_generated_tokens", "num_drafted_tokens", "num_accepted_tokens"]


class Reporter:
    """``with Reporter(fs, staging_dir, total_rows, interval_s):`` prints a line every interval.

    ``state()`` (optional): the job monitor's view (pipeline.monitor.JobMonitor.poll), which tells
    a job still loading its models from one whose first batches are decoding."""

    def __init__(self, fs, staging: str, total_rows: int, interval_s: float, say=print, state=None):
        self.fs, self.staging, self.total, self.interval_s, self.say = fs, staging, total_rows, interval_s, say
        self.state = state
        self.seen: dict[str, list[int]] = {}
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="simsd-progress", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.say(self.line())
            except Exception:  # noqa: BLE001 - progress must never fail a job
                pass

    def line(self) -> str:
        """The current progress line (reads only files not read before)."""
        self._scan()
        rows, tokens, drafted, accepted = (sum(v[i] for v in self.seen.values()) for i in range(4))
        elapsed = time.time() - self.started
        state = self._state()
        if rows == 0:
            return f"simsd: progress 0/{self.total:,} rows, {elapsed:.0f}s: {_before_first_file(state)}"
        # Tokens counted live inside the engine calls when the monitor has them (never fewer than
        # the written files hold).
        tokens = max(tokens, (state or {}).get("tokens_generated", 0))
        parts = [f"simsd: progress {rows:,}/{self.total:,} rows ({100 * rows / max(self.total, 1):.0f}%)",
                 f"{tokens / elapsed:,.0f} tok/s since start"]
        if drafted:
            parts.append(f"acceptance {accepted / drafted:.2f}")
        parts.append(f"ETA {_duration(elapsed * (self.total - rows) / rows)}" if rows < self.total else "writing")
        return ", ".join(parts)

    def _state(self) -> dict | None:
        """The job monitor's view, or None (no monitor, or it cannot answer)."""
        if self.state is None:
            return None
        try:
            return self.state()
        except Exception:  # noqa: BLE001 - the line falls back to the generic text
            return None

    def _scan(self) -> None:
        self.fs.invalidate_cache()
        if not self.fs.exists(self.staging):
            return
        for path in self.fs.find(self.staging):
            if path.endswith(".parquet") and path not in self.seen:
                counts = _counts(self.fs, path)
                if counts is not None:
                    self.seen[path] = counts


def _before_first_file(state: dict | None) -> str:
    """What the job is doing before its first file: loading, decoding, or writing."""
    if not state:
        return "waiting for the first batch (actors starting, models loading)"
    ready, running = state.get("actors_ready", 0), state.get("batches_running", 0)
    tokens = state.get("tokens_generated", 0)
    if state.get("rows_done", 0):
        return f"{state['rows_done']:,} rows generated, their first file being written"
    if ready and running:
        live = f"{tokens:,} tokens generated so far; " if tokens else ""
        return (f"decoding {running} batch(es) on {ready} actor(s) ready: {live}rows are counted when "
                "their batch returns (long rows: minutes)")
    return (f"waiting for the first batch (actors starting: {state.get('actors_placed', 0)} placed, "
            f"{ready} loaded)")


def _counts(fs, path: str) -> list[int] | None:
    """[rows, generated, drafted, accepted] of a complete file; None while it is being written."""
    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f, columns=_COLUMNS)
    except (OSError, pa.ArrowInvalid):
        return None
    return [table.num_rows, *(int(pc.sum(table.column(c)).as_py() or 0) for c in _COLUMNS)]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
