"""Credits shown as money and money typed as credits: exact both ways, never rounded to nothing."""

from __future__ import annotations

import pytest

from app.tenants.money import MoneyError, format_money, parse_money


@pytest.mark.parametrize(
    ("credits", "currency", "shown"),
    [
        (0, "USD", "$0.00"),
        (1, "USD", "$0.000001"),
        (150, "USD", "$0.00015"),
        (1_230_000, "USD", "$1.23"),
        (1_234_500_000, "EUR", "€1,234.50"),
        (99_999_999, "USD", "$99.999999"),
        (-2_500_000, "GBP", "-£2.50"),
    ],
)
def test_credits_are_shown_in_the_currency_with_significant_digits(credits: int, currency: str, shown: str) -> None:
    assert format_money(credits, currency) == shown


@pytest.mark.parametrize(
    ("typed", "credits"),
    [("1.23", 1_230_000), ("$1.23", 1_230_000), ("1,234.5", 1_234_500_000), ("0.000001", 1), ("€3", 3_000_000)],
)
def test_typed_amounts_become_exact_credits(typed: str, credits: int) -> None:
    assert parse_money(typed) == credits
    assert parse_money(format_money(credits)) == credits


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("abc", "is not an amount of money"),
        ("0.0000001", "a millionth"),
        ("-1", "cannot be negative"),
        ("nan", "finite"),
        ("1e30", "larger than Lyss can count"),
    ],
)
def test_amounts_that_are_not_money_are_refused_with_a_reason(typed: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_money(typed)
