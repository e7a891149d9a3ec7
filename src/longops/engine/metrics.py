"""Prometheus metrics of one process (a registry per process, so tests can run several)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.leader = Gauge("longops_leader", "1 if this instance is the leader, else 0", registry=r)
        self.poll_cycles = Counter("longops_poll_cycles", "Poll cycles run", registry=r)
        self.polled = Counter("longops_provider_batches_polled", "Provider batches polled", registry=r)
        self.ended = Counter("longops_provider_batches_ended", "Provider batches that ended", registry=r)
        self.poll_errors = Counter("longops_poll_errors", "Provider errors while polling", registry=r)
        self.items_ingested = Counter("longops_items_ingested", "Item results written", registry=r)
        self.still_running = Gauge(
            "longops_provider_batches_running_polled",
            "Provider batches still running at the last cycle",
            registry=r,
        )
        self.poll_duration = Histogram("longops_poll_cycle_seconds", "Duration of one poll cycle", registry=r)
        self.submitted = Counter("longops_provider_batches_submitted", "Provider batches created", registry=r)
        self.submit_errors = Counter("longops_submit_errors", "Failed or uncertain submissions", registry=r)
        self.unreadable_result_lines = Counter(
            "longops_unreadable_result_lines", "Provider results lines that named no item", registry=r
        )
        # Exposed as longops_tokens_total{provider,model,kind} and longops_cost_usd_total{provider,model};
        # kind is a usage field without "_tokens" (reasoning is part of output: never add the two).
        self.tokens = Counter(
            "longops_tokens", "Tokens of the results written", ["provider", "model", "kind"], registry=r
        )
        self.cost_usd = Counter(
            "longops_cost_usd",
            "Cost in USD of the results written (priced models)",
            ["provider", "model"],
            registry=r,
        )
