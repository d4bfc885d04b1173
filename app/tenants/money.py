"""Amounts of money as people read and type them (`$1.23`), and credits, the exact unit the gateway counts in.

A credit is a millionth of the tenant's display currency: prices, budgets and costs are stored in credits
(integers, so sums are exact) and shown in the currency the organization chose.
"""

from __future__ import annotations

import decimal
from typing import Final, Literal, get_args

import msgspec

CREDITS_PER_UNIT: Final = 1_000_000
CurrencyCode = Literal["USD", "EUR", "GBP", "CNY", "JPY", "CHF", "CAD", "AUD", "INR"]


class Currency(msgspec.Struct, frozen=True):
    code: str
    symbol: str
    name: str


CURRENCIES: Final = {
    currency.code: currency
    for currency in (
        Currency("USD", "$", "US dollar"),
        Currency("EUR", "€", "Euro"),
        Currency("GBP", "£", "Pound sterling"),
        Currency("CNY", "¥", "Chinese yuan"),
        Currency("JPY", "JP¥", "Japanese yen"),
        Currency("CHF", "CHF ", "Swiss franc"),
        Currency("CAD", "CA$", "Canadian dollar"),
        Currency("AUD", "A$", "Australian dollar"),
        Currency("INR", "₹", "Indian rupee"),
    )
}
DEFAULT_CURRENCY: Final = "USD"
assert set(CURRENCIES) == set(get_args(CurrencyCode))


class MoneyError(ValueError):
    """An amount that is not a number of the currency, or has more digits than a credit can hold."""


def format_money(credits: int, currency: str = DEFAULT_CURRENCY) -> str:
    """`$1.23`; smaller amounts keep their significant digits (`$0.000150`), never rounded to `$0.00`."""
    symbol = CURRENCIES[currency].symbol if currency in CURRENCIES else f"{currency} "
    sign = "-" if credits < 0 else ""
    units = decimal.Decimal(abs(credits)) / CREDITS_PER_UNIT
    if units >= 100 or abs(credits) % (CREDITS_PER_UNIT // 100) == 0:
        text = f"{units:,.2f}"
    else:
        whole, fraction = f"{units:,.6f}".split(".")
        text = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
    return f"{sign}{symbol}{text}"


def plain_amount(credits: int) -> str:
    """Credits as a bare decimal amount of the currency, every credit kept (`1.230000`): for files, not people."""
    return f"{decimal.Decimal(credits) / CREDITS_PER_UNIT:.6f}"


def parse_money(text: str) -> int:
    """Credits from what a person typed: `1.23`, `$1.23`, `1,234.5`, `0.000001`. Raises `MoneyError`."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    for currency in CURRENCIES.values():
        cleaned = cleaned.removeprefix(currency.symbol.strip()).removeprefix(currency.code).strip()
    try:
        amount = decimal.Decimal(cleaned)
    except decimal.InvalidOperation:
        raise MoneyError(f"'{text[:40]}' is not an amount of money; write it like 1.23.") from None
    if not amount.is_finite():
        raise MoneyError("An amount of money must be a finite number.")
    if amount < 0:
        raise MoneyError("An amount of money cannot be negative.")
    credits = amount * CREDITS_PER_UNIT
    if credits != credits.to_integral_value():
        raise MoneyError("Amounts go down to a millionth of the currency (0.000001), no further.")
    if credits > 2**53 - 1:
        raise MoneyError("That amount is larger than Lyss can count exactly.")
    return int(credits)
