"""``/metrics``: the governor's state in Prometheus' text format (prometheus-client).

Gauges are read from the governor's latest reading and loaded-model list when scraped, so a scrape
never asks a runtime anything; counters (actions per strategy, admission refusals, requests) are
counted as things happen.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memwarden.core.governor import Governor, LoadOutcome
from memwarden.core.types import Event


class _StateCollector(Collector):
    """Pools, levels and models as the governor last saw them."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def collect(self) -> Iterator[Metric]:
        governor = self.governor
        reading = governor.last_reading
        total = GaugeMetricFamily(
            "memwarden_pool_total_bytes", "Size of a memory pool", labels=["pool"]
        )
        used = GaugeMetricFamily("memwarden_pool_used_bytes", "Bytes in use", labels=["pool"])
        available = GaugeMetricFamily(
            "memwarden_pool_available_bytes", "Bytes available", labels=["pool"]
        )
        level = GaugeMetricFamily(
            "memwarden_pool_level",
            "Pressure level per pool (0 NORMAL, 1 WARNING, 2 CRITICAL, 3 EMERGENCY)",
            labels=["pool"],
        )
        overall = GaugeMetricFamily("memwarden_pressure_level", "The overall pressure level")
        if reading is not None:
            for pool in reading.snapshot.pools:
                total.add_metric([pool.id], pool.total_bytes)
                used.add_metric([pool.id], pool.used_bytes)
                available.add_metric([pool.id], pool.available_bytes)
            for pool_level in reading.pools:
                level.add_metric([pool_level.pool_id], int(pool_level.level))
            overall.add_metric([], int(reading.level))
        yield from (total, used, available, level, overall)
        committed = GaugeMetricFamily(
            "memwarden_model_committed_bytes",
            "Bytes a loaded model holds or has reserved",
            labels=["model", "provider"],
        )
        resident = GaugeMetricFamily(
            "memwarden_model_resident_bytes",
            "Bytes of a loaded model in physical memory, where the runtime measures it",
            labels=["model", "provider"],
        )
        in_flight = GaugeMetricFamily(
            "memwarden_requests_in_flight",
            "Requests made through memwarden that a model is serving now",
            labels=["model", "provider"],
        )
        for model in governor.loaded_models():
            labels = [model.instance_id or model.name, model.provider]
            committed.add_metric(labels, model.total_bytes)
            if model.resident_bytes is not None:
                resident.add_metric(labels, model.resident_bytes)
            in_flight.add_metric(
                labels, governor.warden.usage.in_flight(model.name, model.provider)
            )
        yield from (committed, resident, in_flight)


class Metrics:
    """One registry per server (tests run several in one process)."""

    def __init__(self, governor: Governor) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(governor))
        self.actions = Counter(
            "memwarden_actions",
            "Actions taken (or failed), per strategy and kind",
            ["strategy", "kind", "outcome"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "memwarden_admission_refusals",
            "Requests refused by admission: busy (503, retry) or never (does not fit)",
            ["why"],
            registry=self.registry,
        )
        self.requests = Counter(
            "memwarden_requests",
            "Requests answered by the front door, per route and status",
            ["route", "status"],
            registry=self.registry,
        )

        self.estimate_error = Gauge(
            "memwarden_estimate_error_ratio",
            "(measured - estimated) / estimated bytes of a model's latest load through memwarden",
            ["model", "provider"],
            registry=self.registry,
        )

    def loaded(self, outcome: LoadOutcome) -> None:
        """Record how far the estimate admission planned with was from what the load took."""
        if not outcome.plan.estimates:
            return
        estimated = outcome.plan.estimates[0].total_bytes
        if estimated > 0:
            model = outcome.loaded
            error = (model.total_bytes - estimated) / estimated
            self.estimate_error.labels(model.instance_id or model.name, model.provider).set(error)

    def event(self, event: Event) -> None:
        """Count an action the governor took (``action-taken``/``action-failed`` events)."""
        if event.kind in ("action-taken", "action-failed"):
            data = event.data or {}
            self.actions.labels(
                str(data.get("strategy")),
                str(data.get("action")),
                "ok" if event.kind == "action-taken" else "failed",
            ).inc()

    def refusal(self, why: str, model: str) -> None:
        self.refusals.labels(why).inc()

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
