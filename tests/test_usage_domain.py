"""Usage normalization, prices, cost, the estimate and the usage query: the pure domain functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from longops.domain.estimate import estimate_batch
from longops.domain.price_table import BUNDLED_PRICES
from longops.domain.prices import PriceError, PriceRow, PriceTable, decimal_text, parse_price_rows
from longops.domain.requests import parse_requests
from longops.domain.usage import Usage, model_of_response, usage_of_response
from longops.domain.usage_query import UsageQueryError, day_range, parse_group_by

BUNDLED = PriceTable(BUNDLED_PRICES)


def test_anthropic_message_usage_keeps_cache_reads_and_writes_apart() -> None:
    body = {
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "usage": {
            "input_tokens": 21,
            "output_tokens": 393,
            "cache_read_input_tokens": 1888,
            "cache_creation_input_tokens": 188,
            "service_tier": "batch",
        },
    }
    assert usage_of_response(body) == Usage(21, 393, 1888, 188, 0)
    assert model_of_response(body) == "claude-sonnet-4-5-20250929"


def test_chat_completion_input_excludes_cached_tokens_and_output_includes_reasoning() -> None:
    body = {
        "object": "chat.completion",
        "model": "o4-mini-2025-04-16",
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 900,
            "total_tokens": 2100,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 640, "audio_tokens": 0},
        },
    }
    assert usage_of_response(body) == Usage(
        input_tokens=176, output_tokens=900, cache_read_input_tokens=1024, reasoning_tokens=640
    )


def test_responses_usage_maps_its_details() -> None:
    body = {
        "object": "response",
        "model": "gpt-5-mini",
        "usage": {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 4096},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 256},
            "total_tokens": 5300,
        },
    }
    assert usage_of_response(body) == Usage(904, 300, 4096, 0, 256)


def test_embeddings_usage_is_input_only() -> None:
    body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert usage_of_response(body) == Usage(input_tokens=8)


@pytest.mark.parametrize(
    "body",
    [None, {}, {"usage": None}, {"usage": {"service_tier": "batch"}}, "text", {"usage": []}],
)
def test_a_body_without_usage_reports_none(body: object) -> None:
    assert usage_of_response(body) is None


def test_counts_that_are_not_non_negative_integers_are_zero() -> None:
    body = {"usage": {"input_tokens": -3, "output_tokens": True, "cache_read_input_tokens": "9"}}
    assert usage_of_response(body) == Usage()


def test_cost_is_the_formula_exactly_with_the_batch_discount() -> None:
    row = BUNDLED.find("anthropic", "anthropic", "claude-sonnet-4-5")
    assert row is not None
    usage = Usage(21, 393, 1888, 188, 0)
    live = (21 * Decimal(3) + 393 * Decimal(15) + 1888 * Decimal("0.30") + 188 * Decimal("3.75")) / 10**6
    assert row.cost(usage, "live") == live
    assert row.cost(usage, "batch") == live / 2
    assert decimal_text(row.cost(usage, "batch")) == "0.0036147"


def test_decimal_text_is_exact_without_exponent_or_trailing_zeros() -> None:
    assert decimal_text(Decimal("1E-9")) == "0.000000001"
    assert decimal_text(Decimal("12.500")) == "12.5"
    assert decimal_text(Decimal(0)) == "0"


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4-0613", None),
        ("gpt-4o-audio-preview", None),
        ("claude-opus-4-1", "claude-opus-4-1"),
        ("claude-sim", None),
    ],
)
def test_a_model_is_priced_exactly_or_by_a_dated_prefix_never_by_a_guess(
    model: str, priced_as: str | None
) -> None:
    protocol = "openai" if model.startswith("gpt") else "anthropic"
    row = BUNDLED.find(protocol, protocol, model)
    assert (row.model if row else None) == priced_as


def _row(provider: str, model: str, input_: str) -> PriceRow:
    price = Decimal(input_)
    return PriceRow(provider, model, price, price, price, price)


def test_a_row_for_the_provider_name_wins_over_its_protocol_and_a_later_layer_wins() -> None:
    table = PriceTable.layered(
        [_row("anthropic", "m", "1"), _row("simulator", "m", "2")], [_row("anthropic", "m", "3")]
    )
    assert table.find("simulator", "anthropic", "m").input == 2  # type: ignore[union-attr]
    assert table.find("anthropic", "anthropic", "m").input == 3  # type: ignore[union-attr]


def test_price_rows_parse_with_defaults() -> None:
    [row] = parse_price_rows(
        [{"provider": "openai_compatible", "model": "llama", "input": Decimal("0.1"), "output": 1}], "f"
    )
    assert (row.cache_read, row.cache_write, row.batch_discount) == (Decimal("0.1"), Decimal("0.1"), 0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"provider": "a", "model": "m", "input": 1}], "f: prices[0].output: is required"),
        (
            [{"provider": "a", "model": "m", "input": "x", "output": 1}],
            "f: prices[0].input: must be a number",
        ),
        ([{"provider": "a", "model": "m", "input": -1, "output": 1}], "f: prices[0].input: must be a finite"),
        ([{"provider": "a", "model": "m", "input": 1, "output": 1, "batch_discount": 2}], "batch_discount"),
        ([{"provider": "a", "model": "m", "input": 1, "output": 1, "inptu": 1}], "prices[0].inptu: unknown"),
        (
            [{"provider": "", "model": "m", "input": 1, "output": 1}],
            "prices[0].provider: must be a non-empty",
        ),
        ("rows", "f: prices: must be a list"),
    ],
)
def test_a_bad_price_row_is_one_line_naming_the_row_and_field(rows: object, message: str) -> None:
    with pytest.raises(PriceError) as caught:
        parse_price_rows(rows, "f")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def _requests(*params: dict[str, object]) -> list[dict[str, object]]:
    return [{"custom_id": f"r{i}", "params": p} for i, p in enumerate(params)]


def test_the_estimate_prices_input_for_low_and_adds_max_output_for_high() -> None:
    parsed = parse_requests(
        _requests(
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "x" * 396}],
            },
            {"model": "mystery", "max_tokens": 7, "messages": [{"role": "user", "content": "abc"}]},
        ),
        openai_endpoint=None,
        max_requests=10,
    )
    found = estimate_batch(parsed, BUNDLED, "anthropic", "anthropic", "batch")
    # "user" + 396 characters = 400 characters = 100 tokens; "user" + "abc" = 7 characters = 2 tokens
    assert (found.requests, found.estimated_input_tokens, found.max_output_tokens) == (2, 102, 107)
    assert found.low == Decimal(100) * 1 / 10**6 / 2
    assert found.high == (Decimal(100) * 1 + Decimal(100) * 5) / 10**6 / 2
    assert found.low <= found.high
    assert found.unpriced_models == ("mystery",)


def test_a_request_without_a_model_is_counted_but_neither_priced_nor_listed_as_unpriced() -> None:
    parsed = parse_requests(
        _requests({"max_tokens": 5, "messages": [{"role": "user", "content": "abc"}]}),
        openai_endpoint=None,
        max_requests=10,
    )
    found = estimate_batch(parsed, BUNDLED, "anthropic", "anthropic", "batch")
    assert (found.requests, found.max_output_tokens, found.unpriced_models) == (1, 5, ())
    assert found.low == found.high == 0


def test_group_by_keys_are_checked_and_ordered() -> None:
    assert parse_group_by("day,model") == ("model", "day")
    assert parse_group_by(None) == ()
    with pytest.raises(UsageQueryError, match="group_by: unknown key 'week'"):
        parse_group_by("model,week")


def test_a_range_selects_every_utc_day_it_overlaps() -> None:
    from datetime import date

    assert day_range("2026-12-01", "2026-12-31") == (date(2026, 12, 1), date(2026, 12, 31))
    assert day_range("2026-12-01T10:00:00Z", "2027-01-01T00:00:00Z") == (
        date(2026, 12, 1),
        date(2026, 12, 31),
    )
    assert day_range(None, "2026-12-04T00:00:01+00:00") == (None, date(2026, 12, 4))
    with pytest.raises(UsageQueryError, match="start: must be a date"):
        day_range("yesterday", None)
    with pytest.raises(UsageQueryError, match="end: selects no day"):
        day_range("2026-12-05", "2026-12-04")
