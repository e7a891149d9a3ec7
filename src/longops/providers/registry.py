"""Which providers this process can use, by name, and the live clients of the engine's.

A :class:`ProviderSpec` is what the API needs to know about a provider without building a client:
its ``protocol`` (which adapter speaks to it), whether its batch is the provider's own (``native``)
or run by longops (``emulated``), the endpoints a batch may target, and its limits. The engine
turns specs into adapters (:func:`build_registry`); the engine never branches on a provider's
name, only on what its spec and adapter say.

Where specs come from (:func:`configured_providers`), later sources replacing earlier ones of the
same name:

* ``simulator`` (Anthropic protocol) and ``simulator_openai`` (OpenAI protocol): always, against
  the bundled simulator (``LONGOPS_SIMULATOR_URL`` or the one the engine starts on loopback).
* ``anthropic`` when ``ANTHROPIC_API_KEY`` is set; ``openai`` when ``OPENAI_API_KEY`` is set (the SDKs
  honour ``ANTHROPIC_BASE_URL``/``OPENAI_BASE_URL``); ``openai_compatible`` when
  ``LONGOPS_OPENAI_COMPATIBLE_BASE_URL`` is set.
* every table of ``LONGOPS_PROVIDERS_FILE`` (:mod:`longops.providers.config`).

This module reads no settings: the caller passes :class:`ProviderOptions` and the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from longops.domain.requests import ANTHROPIC_ENDPOINT, OPENAI_ENDPOINTS
from longops.providers.base import Provider

SIMULATOR = "simulator"
SIMULATOR_OPENAI = "simulator_openai"
ANTHROPIC = "anthropic"
OPENAI = "openai"
OPENAI_COMPATIBLE = "openai_compatible"
SIMULATED = frozenset({SIMULATOR, SIMULATOR_OPENAI})


class ProviderProtocol(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai_compatible"


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """What building providers needs from the configuration (``Settings.provider_options``; the
    defaults live there)."""

    timeout: float
    anthropic_max_requests: int
    anthropic_max_bytes: int
    openai_max_requests: int
    openai_max_bytes: int
    openai_delete_files: bool
    openai_compatible_base_url: str | None
    openai_compatible_api_key: str | None
    openai_compatible_concurrency: int
    openai_compatible_max_attempts: int
    providers_file: str | None


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One usable provider. ``api_key``/``base_url`` None: the SDK's own variables decide."""

    name: str
    protocol: ProviderProtocol
    max_requests: int
    max_bytes: int
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int | None = None  # openai_compatible only
    max_attempts: int | None = None  # openai_compatible only

    @property
    def batch(self) -> str:
        """``native`` (the provider runs the batch) or ``emulated`` (longops sends each request)."""
        return "emulated" if self.protocol == ProviderProtocol.OPENAI_COMPATIBLE else "native"

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints a batch may target; the first is the default."""
        if self.protocol == ProviderProtocol.ANTHROPIC:
            return (ANTHROPIC_ENDPOINT,)
        return OPENAI_ENDPOINTS

    @property
    def accepts_openai_lines(self) -> bool:
        return self.protocol != ProviderProtocol.ANTHROPIC


def protocol_limits(protocol: ProviderProtocol, options: ProviderOptions) -> tuple[int, int]:
    """(max requests, max bytes) of one provider batch, unless a providers file says otherwise."""
    if protocol == ProviderProtocol.ANTHROPIC:
        return options.anthropic_max_requests, options.anthropic_max_bytes
    return options.openai_max_requests, options.openai_max_bytes


def _spec(name: str, protocol: ProviderProtocol, options: ProviderOptions, **extra: object) -> ProviderSpec:
    max_requests, max_bytes = protocol_limits(protocol, options)
    return ProviderSpec(name, protocol, max_requests, max_bytes, **extra)  # type: ignore[arg-type]


def configured_providers(
    options: ProviderOptions, environ: Mapping[str, str] | None = None
) -> dict[str, ProviderSpec]:
    """Every provider this process can use, by name. Raises
    :class:`~longops.providers.config.ProvidersFileError` for a bad providers file."""
    from longops.providers.config import load_providers_file

    env = os.environ if environ is None else environ
    specs = {
        SIMULATOR: _spec(SIMULATOR, ProviderProtocol.ANTHROPIC, options),
        SIMULATOR_OPENAI: _spec(SIMULATOR_OPENAI, ProviderProtocol.OPENAI, options),
    }
    if env.get("ANTHROPIC_API_KEY"):
        specs[ANTHROPIC] = _spec(ANTHROPIC, ProviderProtocol.ANTHROPIC, options)
    if env.get("OPENAI_API_KEY"):
        specs[OPENAI] = _spec(OPENAI, ProviderProtocol.OPENAI, options)
    if options.openai_compatible_base_url:
        specs[OPENAI_COMPATIBLE] = _spec(
            OPENAI_COMPATIBLE,
            ProviderProtocol.OPENAI_COMPATIBLE,
            options,
            base_url=options.openai_compatible_base_url,
            api_key=options.openai_compatible_api_key,
            concurrency=options.openai_compatible_concurrency,
            max_attempts=options.openai_compatible_max_attempts,
        )
    if options.providers_file:
        for spec in load_providers_file(options.providers_file, options, env):
            specs[spec.name] = spec
    return specs


def not_configured_reason(name: str, offered: Iterable[str] = ()) -> str:
    """Why ``name`` cannot be used, and what can: ``offered`` are the providers this server has."""
    names = ", ".join(sorted(offered))
    choice = f"; this server offers: {names}" if names else ""
    if name == ANTHROPIC:
        return f"provider 'anthropic' is not configured: set ANTHROPIC_API_KEY{choice}"
    if name == OPENAI:
        return f"provider 'openai' is not configured: set OPENAI_API_KEY{choice}"
    if name == OPENAI_COMPATIBLE:
        return (
            f"provider 'openai_compatible' is not configured: set LONGOPS_OPENAI_COMPATIBLE_BASE_URL{choice}"
        )
    return f"unknown provider {name!r}{choice or ': see GET /v1/providers'}"


class ProviderRegistry:
    """The live provider clients of one engine, by name. ``emulated``: the names of the providers
    whose batches longops runs itself (no client here; see :mod:`longops.engine.emulated`)."""

    def __init__(self, providers: Mapping[str, Provider], emulated: frozenset[str] = frozenset()) -> None:
        self._providers = dict(providers)
        self.emulated = emulated

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def names(self) -> list[str]:
        return sorted(self._providers)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def registry_for(options: ProviderOptions, simulator_url: str | None) -> ProviderRegistry:
    """The adapters of every configured provider (for tools and tests that need no specs)."""
    return build_registry(configured_providers(options), options, simulator_url)


def build_registry(
    specs: Mapping[str, ProviderSpec], options: ProviderOptions, simulator_url: str | None
) -> ProviderRegistry:
    """Adapters for the specs of a native batch protocol (emulated ones are run by the engine's
    own sender, not through this registry). The simulators are skipped without a ``simulator_url``."""
    from longops.providers.anthropic import AnthropicProvider
    from longops.providers.openai import OpenAIProvider

    providers: dict[str, Provider] = {}
    for spec in specs.values():
        if spec.name in SIMULATED:
            if simulator_url is None:
                continue
            base = simulator_url.rstrip("/")
            spec = replace(
                spec,
                api_key="simulator",
                base_url=base if spec.protocol == ProviderProtocol.ANTHROPIC else f"{base}/v1",
            )
        if spec.protocol == ProviderProtocol.ANTHROPIC:
            providers[spec.name] = AnthropicProvider(
                name=spec.name,
                api_key=spec.api_key,
                base_url=spec.base_url,
                timeout=options.timeout,
                max_requests=spec.max_requests,
                max_bytes=spec.max_bytes,
            )
        elif spec.protocol == ProviderProtocol.OPENAI:
            providers[spec.name] = OpenAIProvider(
                name=spec.name,
                api_key=spec.api_key,
                base_url=spec.base_url,
                timeout=options.timeout,
                max_requests=spec.max_requests,
                max_bytes=spec.max_bytes,
                delete_files=options.openai_delete_files,
            )
    emulated = frozenset(spec.name for spec in specs.values() if spec.batch == "emulated")
    return ProviderRegistry(providers, emulated)
