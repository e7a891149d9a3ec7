"""Which protocol a provider speaks, and so which prices and basis its usage has (DESIGN §10).

A tiny lookup by name until providers carry their protocol themselves: ``simulator`` and
``anthropic`` speak ``anthropic``; ``openai`` speaks ``openai``; ``openai_compatible`` is an
emulated batch over live calls, so its basis is ``live`` (no batch discount). An unknown name is
its own protocol, with native batch prices.
"""

from __future__ import annotations

from longops.domain.prices import Basis

_PROTOCOLS = {
    "simulator": "anthropic",
    "anthropic": "anthropic",
    "openai": "openai",
    "openai_compatible": "openai_compatible",
}
_EMULATED = frozenset({"openai_compatible"})


def protocol_of(provider: str) -> str:
    return _PROTOCOLS.get(provider, provider)


def basis_of(provider: str) -> Basis:
    return "live" if protocol_of(provider) in _EMULATED else "batch"
