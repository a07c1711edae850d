"""Prometheus metrics (prometheus-client), one registry per app so tests can build many apps; and the
collectors that read the engine and the store at scrape time. Per model version the outcomes go
beyond thumbs (negative, correction and natural-dissatisfaction rates, mean answer length), the
same ones the canary rule judges, so a dashboard sees a version that wins thumbs by drifting."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("refinery_requests_total", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.completions = Counter("refinery_completions_total", "Chat completions by model and outcome", ["model", "outcome"], registry=r)
        self.tokens = Counter("refinery_tokens_total", "Tokens processed", ["kind"], registry=r)
        self.latency = Histogram("refinery_request_latency_seconds", "Chat completion latency", ["stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("refinery_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r)
        self.feedback = Counter("refinery_feedback_total", "Explicit feedback records by kind", ["kind"], registry=r)
        self.in_flight = Gauge("refinery_generations_in_flight", "Generations queued or running", registry=r)
        self.model_loaded = Gauge("refinery_model_loaded", "1 once the model is loaded", registry=r)


class EngineCollector:
    """Prometheus collector: adapter versions loaded now, how each load went (new LoRA layers
    built by PEFT, or weights copied into idle layers of the same shape), and, for vLLM
    replicas, each replica's state, traffic and failures."""

    def __init__(self, engine_getter):
        self.engine_getter = engine_getter

    def collect(self):
        engine = self.engine_getter()
        if engine is None:
            return
        loads = CounterMetricFamily("refinery_adapter_loads", "Adapter versions loaded, by how", labels=["kind"])
        for kind in ("peft", "copy"):
            loads.add_metric([kind], engine.adapter_loads.get(kind, 0))
        yield loads
        yield GaugeMetricFamily("refinery_adapters_loaded", "Adapter versions loaded and servable", value=len(engine.adapters))
        replicas = engine.health().get("replicas") or []
        if replicas:
            up = GaugeMetricFamily("refinery_replica_up", "1 while the engine replica takes traffic", labels=["replica"])
            busy = GaugeMetricFamily("refinery_replica_in_flight", "Requests in flight on the replica", labels=["replica"])
            sent = CounterMetricFamily("refinery_replica_requests", "Requests sent to the replica", labels=["replica"])
            failed = CounterMetricFamily("refinery_replica_failures", "Times the replica was taken out", labels=["replica"])
            loaded = GaugeMetricFamily("refinery_replica_adapters_loaded", "Adapter versions loaded on the replica", labels=["replica"])
            for r in replicas:
                up.add_metric([r["url"]], int(r["up"]))
                busy.add_metric([r["url"]], r["in_flight"])
                sent.add_metric([r["url"]], r["requests"])
                failed.add_metric([r["url"]], r["failures"])
                loaded.add_metric([r["url"]], len(r["adapters"]))
            yield from (up, busy, sent, failed, loaded)


class OutcomeCollector:
    """Prometheus collector: per-version outcomes, read from the store at scrape time."""

    def __init__(self, store_getter):
        self.store_getter = store_getter

    def collect(self):
        store = self.store_getter()
        if store is None:
            return
        data = store.outcomes.per_version()
        gauges = {
            "requests": GaugeMetricFamily("refinery_version_requests", "Answered requests per model version", labels=["version"]),
            "thumbs_up_rate": GaugeMetricFamily("refinery_version_thumbs_up_rate", "Share of answers rated up", labels=["version"]),
            "thumbs_down_rate": GaugeMetricFamily("refinery_version_thumbs_down_rate", "Share of answers rated down", labels=["version"]),
            "natural_negative_rate": GaugeMetricFamily("refinery_version_natural_negative_rate", "Share of answers followed by natural negative feedback", labels=["version"]),
            "correction_rate": GaugeMetricFamily("refinery_version_correction_rate", "Share of answers the user corrected (explicitly or in the next turn)", labels=["version"]),
            "mean_answer_tokens": GaugeMetricFamily("refinery_version_mean_answer_tokens", "Mean completion tokens per answer", labels=["version"]),
            "mean_flr": GaugeMetricFamily("refinery_version_mean_flr", "Mean follow-up likelihood ratio", labels=["version"]),
        }
        for version, row in data.items():
            for key, gauge in gauges.items():
                if row.get(key) is not None:
                    gauge.add_metric([version], float(row[key]))
        yield from gauges.values()
