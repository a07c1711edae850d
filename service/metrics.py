"""Prometheus metrics (prometheus-client), one registry per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
