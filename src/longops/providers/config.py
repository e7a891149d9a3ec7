"""``LONGOPS_PROVIDERS_FILE``: named providers as configuration (TOML, read with ``tomllib``).

One table per provider::

    [providers.groq]
    protocol = "openai"                 # anthropic | openai | openai_compatible
    base_url = "https://api.groq.com/openai/v1"
    api_key_env = "GROQ_API_KEY"        # the key is read from this variable, never from the file
    max_requests = 50000                # split above these (protocol defaults otherwise)
    max_bytes = 209715200
    concurrency = 16                    # openai_compatible only
    max_attempts = 5                    # openai_compatible only

Every problem is one :class:`ProvidersFileError` line naming the provider and the field, raised
before the server listens. ``api_key_env`` is required for the ``anthropic`` and ``openai``
protocols and optional for ``openai_compatible`` (local servers often need no key); when given,
the variable must be set. ``base_url`` is required for ``openai_compatible``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from longops.providers.registry import (
    SIMULATED,
    ProviderOptions,
    ProviderProtocol,
    ProviderSpec,
    protocol_limits,
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_FIELDS = frozenset(
    {"protocol", "base_url", "api_key_env", "max_requests", "max_bytes", "concurrency", "max_attempts"}
)
_EMULATED_ONLY = frozenset({"concurrency", "max_attempts"})


class ProvidersFileError(ValueError):
    """The providers file cannot be used; the message is one line saying what to fix."""


def load_providers_file(
    path: str, options: ProviderOptions, environ: Mapping[str, str]
) -> list[ProviderSpec]:
    where = f"LONGOPS_PROVIDERS_FILE {path}"
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ProvidersFileError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvidersFileError(f"{where}: is not valid TOML: {exc}") from None
    unknown = set(document) - {"providers"}
    if unknown:
        raise ProvidersFileError(
            f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; write [providers.NAME] tables"
        )
    tables = document.get("providers", {})
    if not isinstance(tables, dict):
        raise ProvidersFileError(f"{where}: 'providers' must be tables [providers.NAME]")
    return [_provider(where, name, table, options, environ) for name, table in tables.items()]


def _provider(
    where: str, name: str, table: Any, options: ProviderOptions, environ: Mapping[str, str]
) -> ProviderSpec:
    at = f"{where}: provider {name!r}"
    if not _NAME.match(name):
        raise ProvidersFileError(f"{at}: the name must match ^[a-z0-9][a-z0-9_-]{{0,31}}$")
    if name in SIMULATED:
        raise ProvidersFileError(f"{at}: the name is reserved for the bundled simulator; choose another")
    if not isinstance(table, dict):
        raise ProvidersFileError(f"{at}: must be a table [providers.{name}]")
    unknown = set(table) - _FIELDS
    if unknown:
        raise ProvidersFileError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
    raw_protocol = table.get("protocol")
    if raw_protocol is None:
        raise ProvidersFileError(f"{at}: protocol is required (anthropic, openai or openai_compatible)")
    try:
        protocol = ProviderProtocol(str(raw_protocol))
    except ValueError:
        allowed = ", ".join(p.value for p in ProviderProtocol)
        raise ProvidersFileError(f"{at}: protocol {raw_protocol!r} is not one of {allowed}") from None
    emulated = protocol == ProviderProtocol.OPENAI_COMPATIBLE
    misplaced = sorted(_EMULATED_ONLY & set(table)) if not emulated else []
    if misplaced:
        raise ProvidersFileError(f"{at}: {misplaced[0]} applies only to protocol openai_compatible")
    base_url = _string(at, table, "base_url")
    if emulated and base_url is None:
        raise ProvidersFileError(f"{at}: base_url is required for protocol openai_compatible")
    key_env = _string(at, table, "api_key_env")
    api_key = None
    if key_env is None and not emulated:
        raise ProvidersFileError(f"{at}: api_key_env is required (the variable that holds the key)")
    if key_env is not None:
        api_key = environ.get(key_env)
        if not api_key:
            raise ProvidersFileError(f"{at}: api_key_env names {key_env}, which is not set")
    default_requests, default_bytes = protocol_limits(protocol, options)
    return ProviderSpec(
        name=name,
        protocol=protocol,
        max_requests=_positive(at, table, "max_requests", default_requests),
        max_bytes=_positive(at, table, "max_bytes", default_bytes),
        base_url=base_url,
        api_key=api_key,
        concurrency=_positive(at, table, "concurrency", options.openai_compatible_concurrency)
        if emulated
        else None,
        max_attempts=_positive(at, table, "max_attempts", options.openai_compatible_max_attempts)
        if emulated
        else None,
    )


def _string(at: str, table: dict[str, Any], field: str) -> str | None:
    value = table.get(field)
    if value is not None and (not isinstance(value, str) or not value):
        raise ProvidersFileError(f"{at}: {field} must be a non-empty string")
    return value


def _positive(at: str, table: dict[str, Any], field: str, default: int) -> int:
    value = table.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProvidersFileError(f"{at}: {field} must be a whole number >= 1, not {value!r}")
    return value
