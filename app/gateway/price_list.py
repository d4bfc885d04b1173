"""The built-in price list (`price_list.json`): providers' public prices in US dollars, read once, as credits.

A model the list has no entry for is looked up again without a trailing snapshot date or `-latest`
(`gpt-4o-2024-08-06` and `claude-3-5-haiku-20241022` are priced as `gpt-4o` and `claude-3-5-haiku`);
a snapshot priced differently from its family has an entry of its own, which wins.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import re
from pathlib import Path
from typing import Final

import msgspec

from app.tenants.money import CREDITS_PER_UNIT

PRICE_LIST_FILE: Final = Path(__file__).with_name("price_list.json")
# `-2024-08-06` (OpenAI), `-20241022` (Anthropic), `-latest` (Anthropic's moving aliases).
_SNAPSHOT_SUFFIX: Final = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class _FilePrice(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str
    completion: str
    cached_prompt: str | None = None
    cache_write: str | None = None


class _FileProvider(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    display_name: str
    models: dict[str, _FilePrice]
    # How this provider's prices read, where they are not plain per-token prices (rerank models).
    note: str = ""


class _File(msgspec.Struct, forbid_unknown_fields=True):
    as_of: datetime.date
    currency: str
    note: str
    providers: list[_FileProvider]


class ListedPrice(msgspec.Struct, frozen=True):
    """One model's list price, in credits (millionths of a US dollar) per million tokens."""

    model: str
    provider: str
    prompt_price: int
    completion_price: int
    cached_prompt_price: int | None
    cache_write_price: int | None = None


class PriceList(msgspec.Struct, frozen=True):
    as_of: datetime.date
    currency: str
    # Provider type name (as in `provider_types`) -> display name; Azure OpenAI uses OpenAI's model names.
    providers: dict[str, str]
    prices: dict[str, ListedPrice]
    # Provider type name -> how its prices read, where they are not plain per-token prices (rerank models).
    notes: dict[str, str]

    def find(self, model: str) -> ListedPrice | None:
        """The model's entry, else its family's (the name without a snapshot date or `-latest`)."""
        listed = self.prices.get(model)
        if listed is None:
            listed = self.prices.get(_SNAPSHOT_SUFFIX.sub("", model))
        return listed


def credits_of(text: str) -> int:
    """Credits from a decimal string of dollars; refuses what is not an exact, non-negative number of credits."""
    amount = decimal.Decimal(text) * CREDITS_PER_UNIT
    if not amount.is_finite() or amount < 0 or amount != amount.to_integral_value():
        raise ValueError(f"{text!r} is not an exact, non-negative amount down to a millionth")
    return int(amount)


def read_price_list(path: Path = PRICE_LIST_FILE) -> PriceList:
    data = msgspec.json.decode(path.read_bytes(), type=_File)
    prices: dict[str, ListedPrice] = {}
    providers: dict[str, str] = {}
    notes: dict[str, str] = {}
    for provider in data.providers:
        providers[provider.name] = provider.display_name
        if provider.note:
            notes[provider.name] = provider.note
        for model, price in provider.models.items():
            if model in prices:
                raise ValueError(f"{model} is listed twice")
            prices[model] = ListedPrice(
                model=model,
                provider=provider.name,
                prompt_price=credits_of(price.prompt),
                completion_price=credits_of(price.completion),
                cached_prompt_price=None if price.cached_prompt is None else credits_of(price.cached_prompt),
                cache_write_price=None if price.cache_write is None else credits_of(price.cache_write),
            )
    return PriceList(as_of=data.as_of, currency=data.currency, providers=providers, prices=prices, notes=notes)


@functools.cache
def price_list() -> PriceList:
    """The shipped list, read on first use."""
    return read_price_list()
