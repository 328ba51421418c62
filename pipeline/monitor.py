"""The job monitor: one small Ray actor per run that the engine actors report to.

It keeps three things the driver cannot see otherwise:

- **the batch ledger** (poison rows): each engine call on a set of rows is "begun" before it
  runs and "finished" after. A call that was begun and never finished was running when its
  worker process died; Ray restarts the actor and re-runs the batch, and the actor asks the
  ledger how many times that batch already killed a worker (see workers/actor.py);
- **progress**: rows finished, tokens generated (counted live inside engine calls, so a batch of
  long rows shows progress long before it returns), and the time of the last change (the
  driver's watchdog);
- **warnings and errors** logged on the workers, deduplicated, for the driver's log.

It reserves no CPU, so it can never take one that reading or writing needs.
"""
from __future__ import annotations

import time
from collections import Counter

MAX_MESSAGES = 1000  # distinct worker messages kept (a flood of distinct texts is cut here)


class JobMonitor:
    def __init__(self):
        self.started: Counter = Counter()
        self.finished: Counter = Counter()
        self.rows_done = 0
        self.running = 0  # engine calls begun and not finished
        self.last_progress = time.monotonic()
        self.retries = 0
        self.poison: list = []
        self.messages: dict[str, int] = {}
        self.order: list[str] = []
        self.actors: set[str] = set()
        self.placed_actors: set[str] = set()
        self.actor_tokens: dict[str, int] = {}  # tokens each engine actor generated so far
        self.first_started: dict | None = None  # start-up timeline of the first actor to finish a call

    # -- ledger ------------------------------------------------------------------------------
    def begin(self, key: str, allowed: int) -> int:
        """How many earlier attempts at ``key`` never finished (their worker died). When that is
        at most ``allowed``, an attempt is recorded (the caller runs it); otherwise nothing is
        recorded (the caller splits the rows instead)."""
        deaths = self.started[key] - self.finished[key]
        if deaths <= allowed:
            self.retries += deaths > 0
            self.started[key] += 1
            self.running += 1
        return deaths

    def finish(self, key: str, rows: int) -> None:
        self.finished[key] += 1
        self.running -= 1
        self.rows_done += rows
        self.last_progress = time.monotonic()

    def deaths(self, key: str) -> int:
        return self.started[key] - self.finished[key]

    def tokens(self, actor_id: str, total: int) -> None:
        """An engine actor's generated tokens so far (its finished calls plus the running one)."""
        self.actor_tokens[actor_id] = total
        self.last_progress = time.monotonic()

    def poisoned(self, row_id) -> None:
        self.poison.append(row_id)

    def placed(self, actor_id: str) -> None:
        """An engine actor process got its resources and started loading its models."""
        self.placed_actors.add(actor_id)

    def ready(self, actor_id: str) -> None:
        """An engine actor finished loading its models."""
        self.actors.add(actor_id)

    def actor_started(self, actor_id: str, timeline: dict) -> None:
        """An engine actor finished its first engine call; ``timeline`` is its start-up
        (workers/runtime/startup.py). The earliest one to finish is the run's start-up."""
        done = (timeline.get("first_call_at") or 0.0) + (timeline.get("first_call_s") or 0.0)
        if self.first_started is None or done < self.first_started["done_at"]:
            self.first_started = {**timeline, "actor_id": actor_id, "done_at": done}

    # -- messages ----------------------------------------------------------------------------
    def report(self, text: str) -> None:
        if text in self.messages:
            self.messages[text] += 1
        elif len(self.order) < MAX_MESSAGES:
            self.messages[text] = 1
            self.order.append(text)

    # -- driver side -------------------------------------------------------------------------
    def poll(self, seen: int) -> dict:
        """Progress and the distinct messages after the first ``seen`` ones."""
        return {"rows_done": self.rows_done, "idle_s": time.monotonic() - self.last_progress,
                "actors_ready": len(self.actors), "actors_placed": len(self.placed_actors),
                # engine calls begun and not finished: decoding now (or their worker died)
                "batches_running": self.running,
                "tokens_generated": sum(self.actor_tokens.values()),
                "messages": self.order[seen:]}

    def stats(self) -> dict:
        repeated = {t: n for t, n in self.messages.items() if n > 1}
        return {"batch_retries": self.retries, "poison_rows": list(self.poison), "startup": self.first_started,
                "worker_messages": len(self.order), "repeated_messages": repeated}


def start():
    """A fresh monitor actor for this run (no CPU reserved, never restarted: it holds state)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(JobMonitor).remote()
