"""The price table in force: the bundled one, extended or overridden by ``LONGOPS_PRICES_FILE``.

The file is TOML with ``[[prices]]`` rows (see :mod:`longops.domain.prices` and ``docs/cost.md``),
read with ``parse_float=Decimal`` so that no price passes through a float. A file that cannot be
read or parsed raises :class:`~longops.domain.prices.PriceError` with one line naming the file, the
row and the field; ``longops serve`` and ``longops engine`` stop on it before anything listens.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from longops.domain.price_table import BUNDLED_PRICES
from longops.domain.prices import PriceError, PriceRow, PriceTable, parse_price_rows
from longops.providers.registry import configured_providers
from longops.settings import Settings


def read_prices_file(path: str | Path) -> list[PriceRow]:
    origin = f"LONGOPS_PRICES_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceError(f"{origin}: cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"{origin}: is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"prices"})
    if unknown:
        raise PriceError(f"{origin}: {unknown[0]}: unknown key (the file holds [[prices]] rows)")
    return parse_price_rows(data.get("prices", []), origin)


def load_price_table(settings: Settings) -> PriceTable:
    """The bundled rows, then the file's (a file row replaces a bundled one of the same provider
    and model), knowing each configured provider's protocol and whether its batches are emulated."""
    extra = read_prices_file(settings.prices_file) if settings.prices_file else []
    specs = configured_providers(settings.provider_options())
    return PriceTable.layered(
        BUNDLED_PRICES,
        extra,
        protocols={name: str(spec.protocol) for name, spec in specs.items()},
        emulated=[name for name, spec in specs.items() if spec.batch == "emulated"],
    )
