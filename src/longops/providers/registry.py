"""Which providers this process can use, built from settings and the providers' own SDK variables.

* ``simulator`` is always available: the bundled fake of the Anthropic Message Batches API, reached
  through the same Anthropic adapter as the real provider (at ``LONGOPS_SIMULATOR_URL``, or at a
  simulator the engine starts on a loopback port).
* ``anthropic`` is available when ``ANTHROPIC_API_KEY`` is set (``ANTHROPIC_BASE_URL`` is honoured
  by the SDK).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from longops.providers.base import Provider
from longops.settings import Settings

SIMULATOR = "simulator"
ANTHROPIC = "anthropic"
KNOWN_PROVIDERS = (ANTHROPIC, "openai", "openai_compatible", SIMULATOR)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What the API needs to know about a provider without building a client."""

    name: str
    accepts_openai_lines: bool


def configured_providers(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, ProviderSpec]:
    env = os.environ if environ is None else environ
    specs = {SIMULATOR: ProviderSpec(SIMULATOR, accepts_openai_lines=False)}
    if env.get("ANTHROPIC_API_KEY"):
        specs[ANTHROPIC] = ProviderSpec(ANTHROPIC, accepts_openai_lines=False)
    return specs


def not_configured_reason(name: str) -> str:
    if name == ANTHROPIC:
        return "provider 'anthropic' is not configured: set ANTHROPIC_API_KEY"
    if name in KNOWN_PROVIDERS:
        return f"provider {name!r} is not available in this version"
    return f"unknown provider {name!r}"


class ProviderRegistry:
    """The live provider clients of one engine, by name."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def names(self) -> list[str]:
        return sorted(self._providers)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def build_registry(settings: Settings, simulator_url: str | None) -> ProviderRegistry:
    from longops.providers.anthropic import AnthropicProvider

    providers: dict[str, Provider] = {}
    if simulator_url is not None:
        providers[SIMULATOR] = AnthropicProvider(
            name=SIMULATOR,
            api_key="simulator",
            base_url=simulator_url,
            timeout=settings.provider_timeout_seconds,
            max_requests=settings.anthropic_max_requests,
            max_bytes=settings.anthropic_max_bytes,
        )
    if ANTHROPIC in configured_providers(settings):
        providers[ANTHROPIC] = AnthropicProvider(
            name=ANTHROPIC,
            timeout=settings.provider_timeout_seconds,
            max_requests=settings.anthropic_max_requests,
            max_bytes=settings.anthropic_max_bytes,
        )
    return ProviderRegistry(providers)
