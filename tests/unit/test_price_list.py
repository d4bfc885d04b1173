"""The shipped price list loads, holds only exact non-negative prices, and finds snapshots by their family."""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import pytest

from app.gateway.price_list import PRICE_LIST_FILE, credits_of, price_list, read_price_list


def test_the_shipped_list_loads_with_its_date_and_every_price_is_exact_non_negative_and_cached_at_most_prompt() -> None:
    listed = price_list()
    assert listed.currency == "USD"
    assert listed.as_of.year == 2026
    assert {"openai", "anthropic", "deepseek", "zhipu"} <= set(listed.providers)
    raw = json.loads(PRICE_LIST_FILE.read_text())
    for provider in raw["providers"]:
        for model, price in provider["models"].items():
            for field, text in price.items():
                # Strings in the file, never floats: 0.1 as a float is not a tenth.
                assert isinstance(text, str), (model, field)
                assert decimal.Decimal(text) >= 0, (model, field)
    assert len(listed.prices) >= 30
    for entry in listed.prices.values():
        assert entry.prompt_price >= 0
        assert entry.completion_price >= 0
        if entry.cached_prompt_price is not None:
            assert 0 <= entry.cached_prompt_price <= entry.prompt_price, entry.model
    assert listed.prices["gpt-4o-mini"].prompt_price == 150_000  # $0.15 per million tokens, in credits


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # priced apart from its family: its own entry wins
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-test", None),
        ("gpt-4o-custom", None),
        ("gpt-4o-2024", None),
        ("my-gpt-4o", None),
        ("gpt-3.5-turbo-1106", None),  # a four-digit snapshot is no date: not guessed
    ],
)
def test_a_snapshot_name_is_priced_as_its_family_and_nothing_else_is_guessed(asked: str, found: str | None) -> None:
    entry = price_list().find(asked)
    assert (entry.model if entry else None) == found


def test_a_list_with_an_inexact_or_negative_price_is_refused(tmp_path: Path) -> None:
    assert credits_of("0.000001") == 1
    for wrong in ("0.0000001", "-1", "NaN"):
        with pytest.raises((ValueError, decimal.InvalidOperation)):
            credits_of(wrong)
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps(
            {
                "as_of": "2026-01-01",
                "currency": "USD",
                "note": "",
                "providers": [
                    {"name": "x", "display_name": "X", "models": {"m": {"prompt": "0.1234567", "completion": "1"}}}
                ],
            }
        )
    )
    with pytest.raises(ValueError, match=r"0\.1234567"):
        read_price_list(path)
