"""Usage into Prometheus: ``longops_tokens_total`` and ``longops_cost_usd_total``, per committed write.

Fed with what a write changed (:class:`~longops.store.items.Written`), after its transaction has
committed, so a result is counted once per process however often its stream is read again (a
replayed write changes nothing, so adds nothing). Like every Prometheus counter, they start at 0 with
the process; ``GET /v1/usage`` is the durable record.
"""

from __future__ import annotations

from collections.abc import Mapping

from longops.domain.prices import PriceTable
from longops.domain.usage import USAGE_FIELDS
from longops.engine.metrics import Metrics
from longops.store.items import Written

_KINDS = tuple((name, name.removesuffix("_input_tokens").removesuffix("_tokens")) for name in USAGE_FIELDS)


class UsageMeter:
    def __init__(self, metrics: Metrics, prices: PriceTable) -> None:
        self._metrics = metrics
        self._prices = prices

    def record(self, written: Written, provider_of_job: Mapping[str, str]) -> None:
        for (job_id, model), total in written.usage.items():
            provider = provider_of_job[job_id]
            for name, kind in _KINDS:
                tokens = getattr(total.usage, name)
                if tokens:
                    self._metrics.tokens.labels(provider, model, kind).inc(tokens)
            row = self._prices.find(provider, self._prices.protocol_of(provider), model)
            if row is not None:
                self._metrics.cost_usd.labels(provider, model).inc(
                    float(row.cost(total.usage, self._prices.basis_of(provider)))
                )
