"""Live Ray metrics exported by each engine actor (Ray dashboard, Prometheus).

Every counter is tagged with the actor that decoded the rows (``actor``) and the decoder.
Ray prefixes application metrics with ``ray_`` when it exports them, and appends ``_total`` to
counters, so ``simsd_generated_tokens`` is scraped as ``ray_simsd_generated_tokens_total``.
Outside a Ray worker or driver (``simsd.LLM`` in a notebook) nothing is recorded.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from ..api import Result

log = logging.getLogger(__name__)

# Counter name -> (description, the value one result adds).
COUNTERS: dict[str, tuple[str, Callable[[Result], float]]] = {
    "simsd_rows": ("rows finished (error rows included)", lambda r: 1),
    "simsd_generated_tokens": ("tokens generated", lambda r: r.num_generated_tokens),
    "simsd_input_tokens": ("prompt tokens of the finished rows", lambda r: r.num_input_tokens),
    "simsd_rounds": ("denoising steps (vanilla) or speculative rounds (simsd)", lambda r: r.num_rounds),
    "simsd_drafted_tokens": ("tokens proposed by the draft", lambda r: r.num_drafted_tokens),
    "simsd_accepted_tokens": ("drafted tokens the target accepted", lambda r: r.num_accepted_tokens),
    "simsd_undrafted_rounds": ("simsd rounds the target decoded alone (adaptive)", lambda r: r.num_undrafted_rounds),
    "simsd_error_rows": ("rows that ended with finish_reason error",
                         lambda r: 1 if r.finish_reason == "error" else 0),
}
# Counter name -> (description, the engine attribute holding its running total).
ENGINE_COUNTERS: dict[str, tuple[str, str]] = {
    "simsd_preemptions": ("sequences preempted when the KV pool ran out of pages", "num_preemptions"),
}
# Gauge name -> (description, the engine attribute holding its current value).
ENGINE_GAUGES: dict[str, tuple[str, str]] = {
    "simsd_kv_pool_peak_usage": ("highest fraction of the KV pool's pages in use during the last batch",
                                 "kv_pool_peak_usage"),
    "simsd_kv_pool_tokens": ("tokens of K/V the pool holds (its capacity)", "pool_tokens"),
}
TAG_KEYS = ("actor", "decoder")


class ActorMetrics:
    """The counters of one actor. ``counter_factory`` builds one counter from (name,
    description, tag_keys); the default is ``ray.util.metrics.Counter`` when Ray is running,
    none otherwise (then ``record`` does nothing)."""

    def __init__(self, actor: str, decoder: str, counter_factory: Callable | None = None,
                 gauge_factory: Callable | None = None):
        self.tags = {"actor": actor, "decoder": decoder}
        factory = counter_factory or _ray_counter_factory()
        gauges = gauge_factory or _ray_gauge_factory()
        self.gauges = {} if gauges is None else {
            name: gauges(name, description, TAG_KEYS) for name, (description, _) in ENGINE_GAUGES.items()}
        described = {**{n: d for n, (d, _) in COUNTERS.items()}, **{n: d for n, (d, _) in ENGINE_COUNTERS.items()}}
        self.counters = {} if factory is None else {
            name: factory(name, description, TAG_KEYS) for name, description in described.items()}
        self._engine_seen: dict[str, float] = {}

    def record(self, results: Iterable[Result], engine=None) -> None:
        """Add a batch's finished rows (and what ``engine``'s running totals grew by) to the
        counters. Never raises: metrics must not fail rows."""
        results = [r for r in results if r is not None]
        try:
            for name, (_, attribute) in ENGINE_GAUGES.items():
                value = getattr(engine, attribute, None)
                if name in self.gauges and isinstance(value, (int, float)):
                    self.gauges[name].set(value, tags=self.tags)
            if not self.counters:
                return
            for name, (_, value) in COUNTERS.items():
                self._inc(name, sum(value(r) for r in results))
            for name, (_, attribute) in ENGINE_COUNTERS.items():
                total = getattr(engine, attribute, None)
                if isinstance(total, (int, float)):
                    self._inc(name, total - self._engine_seen.get(name, 0))
                    self._engine_seen[name] = total
        except Exception as err:  # noqa: BLE001 - a metrics backend problem is logged, not raised
            log.warning("cannot record metrics: %s", err)

    def _inc(self, name: str, value: float) -> None:
        if value > 0:  # Ray counters refuse increments <= 0
            self.counters[name].inc(value, tags=self.tags)


def _ray_gauge_factory() -> Callable | None:
    return _ray_metric_factory("Gauge")


def _ray_counter_factory() -> Callable | None:
    return _ray_metric_factory("Counter")


def _ray_metric_factory(kind: str) -> Callable | None:
    """A builder of ``ray.util.metrics.<kind>`` when Ray is running, else None (nothing recorded)."""
    try:
        import ray
        from ray.util import metrics as ray_metrics
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    cls = getattr(ray_metrics, kind)
    return lambda name, description, tag_keys: cls(name, description=description, tag_keys=tag_keys)
