"""Prices and cost: exact decimal arithmetic over normalized usage (DESIGN §10). Pure.

A price row is per provider (a provider's name, or a protocol: ``anthropic``, ``openai``,
``openai_compatible``) and model, in USD per million tokens at live prices, with the batch discount:

    cost = (input × input + output × output + cache read × cache_read + cache write × cache_write) / 10⁶
           × (1 − batch_discount)   for native batches (basis ``batch``); no discount for ``live``

Reasoning tokens are part of output and never charged again. Everything is :class:`~decimal.Decimal`
(prices are parsed from text, never through a float), and amounts are shown exactly, not rounded.

Lookup (:meth:`PriceTable.find`): rows for the provider's own name first, then rows for its
protocol; within those, the row whose ``model`` equals the model, else the one the model extends by
a date suffix (``claude-sonnet-4-5`` prices ``claude-sonnet-4-5-20250929``; ``gpt-4o`` prices
``gpt-4o-2024-08-06`` but not ``gpt-4o-mini``: a guess is worse than ``unpriced_models``). Tables
are layered (:meth:`PriceTable.layered`): a later layer's row replaces an earlier one with the same
provider and model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from longops.domain.usage import Usage

Basis = Literal["batch", "live"]
MILLION = Decimal(1_000_000)
_DATE_SUFFIX = re.compile(r"^(\d{8}|\d{4}-\d{2}-\d{2}|\d{4}|latest)$")
_REQUIRED = ("provider", "model", "input", "output")
_RATES = ("input", "output", "cache_read", "cache_write")
_TEXT = ("provider", "model", "as_of", "source")
_FIELDS = frozenset((*_TEXT, *_RATES, "batch_discount"))


class PriceError(ValueError):
    """A price row that cannot be used; the message names the row and the field."""


@dataclass(frozen=True, slots=True)
class PriceRow:
    provider: str
    model: str
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    batch_discount: Decimal = Decimal(0)
    as_of: str | None = None
    source: str | None = None

    def cost(self, usage: Usage, basis: Basis) -> Decimal:
        """The exact cost of ``usage`` at this row's prices, on ``basis``."""
        amount = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_input_tokens * self.cache_read
            + usage.cache_creation_input_tokens * self.cache_write
        ) / MILLION
        if basis == "batch":
            amount *= 1 - self.batch_discount
        return amount

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            **{name: decimal_text(getattr(self, name)) for name in (*_RATES, "batch_discount")},
            "as_of": self.as_of,
            "source": self.source,
        }


def decimal_text(value: Decimal) -> str:
    """A decimal as exact plain text: no exponent, no trailing zeros (``0.0000045``, ``12``, ``0``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PriceError(f"{where}: must be a number, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise PriceError(f"{where}: must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise PriceError(f"{where}: must be a finite number >= 0, got {value!r}")
    return number


def parse_price_rows(rows: Any, origin: str) -> list[PriceRow]:
    """Price rows from the ``prices`` list of a table (a TOML file parsed with Decimal floats).

    ``origin`` names the table in errors: ``<origin>: prices[2].input: must be a number …``.
    ``cache_read`` and ``cache_write`` default to ``input``, ``batch_discount`` to 0."""
    if not isinstance(rows, list):
        raise PriceError(f"{origin}: prices: must be a list of [[prices]] tables")
    parsed = []
    for index, row in enumerate(rows):
        where = f"{origin}: prices[{index}]"
        if not isinstance(row, dict):
            raise PriceError(f"{where}: must be a table with provider, model, input, output")
        unknown = sorted(set(row) - _FIELDS)
        if unknown:
            raise PriceError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(_FIELDS))})")
        for name in _REQUIRED:
            if name not in row:
                raise PriceError(f"{where}.{name}: is required")
        for name in _TEXT:
            value = row.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise PriceError(f"{where}.{name}: must be a non-empty string, got {value!r}")
        rates = {name: _decimal(row[name], f"{where}.{name}") for name in _RATES if name in row}
        discount = _decimal(row.get("batch_discount", 0), f"{where}.batch_discount")
        if discount > 1:
            raise PriceError(f"{where}.batch_discount: must be between 0 and 1, got {discount}")
        parsed.append(
            PriceRow(
                provider=row["provider"],
                model=row["model"],
                input=rates["input"],
                output=rates["output"],
                cache_read=rates.get("cache_read", rates["input"]),
                cache_write=rates.get("cache_write", rates["input"]),
                batch_discount=discount,
                as_of=row.get("as_of"),
                source=row.get("source"),
            )
        )
    return parsed


class PriceTable:
    """Price rows by (provider, model); see the module docstring for the lookup."""

    def __init__(
        self,
        rows: Iterable[PriceRow],
        *,
        protocols: Mapping[str, str] | None = None,
        emulated: Iterable[str] = (),
    ) -> None:
        """``protocols`` names each provider's protocol (a name not in it is its own protocol);
        ``emulated`` the providers whose batches longops emulates with live calls (basis ``live``)."""
        self._rows: dict[tuple[str, str], PriceRow] = {}
        for row in rows:
            self._rows[row.provider, row.model] = row  # a later row replaces an earlier one
        self._protocols = dict(protocols or {})
        self._emulated = frozenset(emulated)

    @classmethod
    def layered(
        cls,
        *layers: Iterable[PriceRow],
        protocols: Mapping[str, str] | None = None,
        emulated: Iterable[str] = (),
    ) -> PriceTable:
        return cls((row for layer in layers for row in layer), protocols=protocols, emulated=emulated)

    def protocol_of(self, provider: str) -> str:
        return self._protocols.get(provider, provider)

    def basis_of(self, provider: str) -> Basis:
        return "live" if provider in self._emulated else "batch"

    @property
    def rows(self) -> Sequence[PriceRow]:
        return sorted(self._rows.values(), key=lambda row: (row.provider, row.model))

    def find(self, provider: str, protocol: str, model: str) -> PriceRow | None:
        for owner in dict.fromkeys((provider, protocol)):
            exact = self._rows.get((owner, model))
            if exact is not None:
                return exact
            # dated ids: the longest row model that the model extends by "-<date>"
            head, sep, tail = model.rpartition("-")
            while sep:
                if _DATE_SUFFIX.match(tail) and (row := self._rows.get((owner, head))) is not None:
                    return row
                head, sep, rest = head.rpartition("-")
                tail = f"{rest}-{tail}"
        return None
