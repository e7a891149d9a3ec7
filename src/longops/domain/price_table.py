"""The price table shipped in the package (USD per million tokens at live prices), dated per row.

Sources, as of 2026-12-04:

* Anthropic — "Pricing" (platform.claude.com/docs/en/about-claude/pricing): base input, 5-minute
  cache writes, cache hits, output; "Batch processing": 50 % off every token kind.
* OpenAI — "Pricing" (developers.openai.com/api/docs/pricing): input, cached input, output;
  "Batch API": 50 % off. OpenAI charges nothing extra to write its cache, so cache write = input.

Rows are keyed by protocol, so every provider of that protocol (``simulator`` is ``anthropic``)
uses them unless a row for its own name exists. ``LONGOPS_PRICES_FILE`` extends or overrides
this table (see ``docs/cost.md``); no ``openai_compatible`` rows are shipped (self-hosted models
have the prices their operator gives them).
"""

from __future__ import annotations

from decimal import Decimal

from longops.domain.prices import PriceRow

AS_OF = "2026-12-04"
_ANTHROPIC_SOURCE = "platform.claude.com/docs/en/about-claude/pricing"
_OPENAI_SOURCE = "developers.openai.com/api/docs/pricing"
_HALF = Decimal("0.5")


def _row(provider: str, source: str, model: str, *rates: str) -> PriceRow:
    input_, output, cache_read, cache_write = (Decimal(rate) for rate in rates)
    return PriceRow(provider, model, input_, output, cache_read, cache_write, _HALF, AS_OF, source)


def _anthropic(model: str, input_: str, output: str, cache_read: str, cache_write: str) -> PriceRow:
    return _row("anthropic", _ANTHROPIC_SOURCE, model, input_, output, cache_read, cache_write)


def _openai(model: str, input_: str, output: str, cached: str | None = None) -> PriceRow:
    return _row("openai", _OPENAI_SOURCE, model, input_, output, cached or input_, input_)


BUNDLED_PRICES: tuple[PriceRow, ...] = (
    # Anthropic: model, input, output, cache read (hits), cache write (5 minutes)
    _anthropic("claude-opus-5", "5", "25", "0.50", "6.25"),
    _anthropic("claude-opus-4-8", "5", "25", "0.50", "6.25"),
    _anthropic("claude-opus-4-7", "5", "25", "0.50", "6.25"),
    _anthropic("claude-opus-4-6", "5", "25", "0.50", "6.25"),
    _anthropic("claude-opus-4-5", "5", "25", "0.50", "6.25"),
    _anthropic("claude-opus-4-1", "15", "75", "1.50", "18.75"),
    _anthropic("claude-opus-4-0", "15", "75", "1.50", "18.75"),
    _anthropic("claude-opus-4", "15", "75", "1.50", "18.75"),
    _anthropic("claude-sonnet-4-6", "3", "15", "0.30", "3.75"),
    _anthropic("claude-sonnet-4-5", "3", "15", "0.30", "3.75"),
    _anthropic("claude-sonnet-4-0", "3", "15", "0.30", "3.75"),
    _anthropic("claude-sonnet-4", "3", "15", "0.30", "3.75"),
    _anthropic("claude-3-7-sonnet", "3", "15", "0.30", "3.75"),
    _anthropic("claude-haiku-4-5", "1", "5", "0.10", "1.25"),
    _anthropic("claude-3-5-haiku", "0.80", "4", "0.08", "1"),
    _anthropic("claude-3-haiku", "0.25", "1.25", "0.03", "0.30"),
    # OpenAI: model, input, output, cached input
    _openai("gpt-5.1", "1.25", "10", "0.125"),
    _openai("gpt-5", "1.25", "10", "0.125"),
    _openai("gpt-5-mini", "0.25", "2", "0.025"),
    _openai("gpt-5-nano", "0.05", "0.40", "0.005"),
    _openai("gpt-4.1", "2", "8", "0.50"),
    _openai("gpt-4.1-mini", "0.40", "1.60", "0.10"),
    _openai("gpt-4.1-nano", "0.10", "0.40", "0.025"),
    _openai("gpt-4o", "2.50", "10", "1.25"),
    _openai("gpt-4o-mini", "0.15", "0.60", "0.075"),
    _openai("o3", "2", "8", "0.50"),
    _openai("o3-mini", "1.10", "4.40", "0.55"),
    _openai("o4-mini", "1.10", "4.40", "0.275"),
    _openai("text-embedding-3-small", "0.02", "0"),
    _openai("text-embedding-3-large", "0.13", "0"),
    _openai("text-embedding-ada-002", "0.10", "0"),
)
