"""Portal model prices (admins): the built-in list beside the organization's own prices, overrides set and removed."""

from __future__ import annotations

import functools

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway import admin as gateway_admin
from app.gateway.admin import PriceAdmin
from app.gateway.schemas import BuiltInPriceRead, PriceRead, PriceWrite
from app.portal.forms import FormInvalid, FormSubmission
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, see_other
from app.tenants.money import MoneyError, format_money, parse_money

PRICES = f"{PORTAL}/prices"
# The group of models the built-in list does not name: the organization's channels' and its own prices'.
OTHER = "other"
UNIT_AMOUNTS = ("image_price", "audio_second_price", "speech_price", "request_price")
AMOUNTS = ("prompt_price", "cached_prompt_price", "cache_write_price", "completion_price", *UNIT_AMOUNTS)
OPTIONAL_AMOUNTS = ("cached_prompt_price", "cache_write_price", *UNIT_AMOUNTS)
SAVED = {
    "saved": "The price is saved; calls of this model cost it from now on.",
    "removed": "Your price is removed; the model costs the built-in price again, or the '*' price, or nothing.",
}
MAX_SEARCH = 100


class PriceRow(msgspec.Struct, frozen=True):
    model: str
    # Served by one of the organization's channels.
    served: bool
    built_in: BuiltInPriceRead | None
    own: PriceRead | None


class PriceGroup(msgspec.Struct, frozen=True):
    key: str
    title: str
    rows: list[PriceRow]
    # How the list's prices of this provider read, where they are not plain per-token prices.
    note: str = ""


def _rows(
    listed: list[BuiltInPriceRead],
    own: list[PriceRead],
    served: set[str],
    providers: dict[str, str],
    notes: dict[str, str],
) -> list[PriceGroup]:
    """Every listed model, every model a channel serves and every priced one, grouped by the list's provider."""
    by_model = {price.model: price for price in own}
    groups: dict[str, list[PriceRow]] = {key: [] for key in [*providers, OTHER]}
    for entry in listed:
        groups[entry.provider].append(PriceRow(entry.model, entry.model in served, entry, by_model.get(entry.model)))
    listed_models = {entry.model for entry in listed}
    for model in sorted((served | set(by_model)) - listed_models):
        groups[OTHER].append(PriceRow(model, model in served, None, by_model.get(model)))
    titles = {**providers, OTHER: "Your channels' other models and your other prices"}
    return [
        PriceGroup(key, titles[key], sorted(rows, key=lambda row: row.model), notes.get(key, ""))
        for key, rows in groups.items()
        if rows
    ]


def _money_text(credits: int | None, currency: str) -> str:
    return "" if credits is None else format_money(credits, currency)


def _parsed(values: dict[str, str]) -> tuple[str, PriceWrite]:
    """The model and its prices in credits, every wrong field reported at once."""
    errors: dict[str, str] = {}
    if not values["model"]:
        errors["model"] = "This field is required."
    credits: dict[str, int | None] = {}
    for name in AMOUNTS:
        if not values[name]:
            if name not in OPTIONAL_AMOUNTS:
                errors[name] = "This field is required."
            credits[name] = None
            continue
        try:
            credits[name] = parse_money(values[name])
        except MoneyError as error:
            errors[name] = str(error)
    if errors:
        raise FormInvalid(errors)
    return values["model"], PriceWrite(
        prompt_price=credits["prompt_price"] or 0,
        completion_price=credits["completion_price"] or 0,
        cached_prompt_price=credits["cached_prompt_price"],
        cache_write_price=credits["cache_write_price"],
        image_price=credits["image_price"],
        audio_second_price=credits["audio_second_price"],
        speech_price=credits["speech_price"],
        request_price=credits["request_price"],
    )


class PricePages(Controller):
    path = "/prices"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    async def _prices_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        *,
        search: str = "",
        provider: str = "",
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
        notices: list[tuple[str, str]] | None = None,
    ) -> Template:
        currency = viewer.organization.currency
        built_in = gateway_admin.built_in_prices(currency)
        groups = _rows(
            built_in.prices,
            await gateway_admin.own_prices(db_session),
            await gateway_admin.channel_models(db_session),
            built_in.providers,
            built_in.notes,
        )
        needle = search.lower()
        shown = [
            PriceGroup(group.key, group.title, [row for row in group.rows if needle in row.model.lower()], group.note)
            for group in groups
            if not provider or group.key == provider
        ]
        return page(
            viewer,
            "prices/page.html",
            status_code=status_code if errors else 200,
            built_in=built_in,
            groups=[group for group in shown if group.rows],
            group_choices=[("", "All providers"), *((group.key, group.title) for group in groups)],
            filters={"q": search, "provider": provider},
            list_money=functools.partial(format_money, currency=built_in.currency),
            values=values or {},
            errors=errors or {},
            notices=notices or [],
        )

    @get("/", summary="Model prices")
    async def show_prices(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        q: FromQuery[str] = "",
        provider: FromQuery[str] = "",
        model: FromQuery[str] = "",
        saved: FromQuery[str | None] = None,
    ) -> Template:
        notices = [("ok", SAVED[saved])] if saved and saved in SAVED else []
        values: dict[str, str] = {}
        if model:
            # "Set a price" on a row: the form starts from what the model costs now.
            currency = viewer.organization.currency
            own = {price.model: price for price in await gateway_admin.own_prices(db_session)}.get(model)
            listed = gateway_admin.built_in_prices(currency)
            entry = next((price for price in listed.prices if price.model == model), None)
            start: PriceRead | BuiltInPriceRead | None = own or (entry if listed.applies else None)
            values = {"model": model[:100]}
            if start is not None:
                values |= {name: _money_text(getattr(start, name, None), currency) for name in AMOUNTS}
        return await self._prices_page(
            viewer, db_session, search=q[:MAX_SEARCH].strip(), provider=provider[:50], values=values, notices=notices
        )

    @post("/", summary="Set a model's price")
    async def set_price(
        self,
        price_admin: NamedDependency[PriceAdmin],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = {name: str(form.get(name) or "").strip() for name in ("model", *AMOUNTS)}
        async with FormSubmission(db_session) as submission:
            model, price = _parsed(values)
            await price_admin.set(model, price)
        if submission.refused:
            return await self._prices_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{PRICES}?saved=saved")

    @post("/delete", summary="Remove a model's price (it falls back to the built-in list)")
    async def remove_price(
        self,
        price_admin: NamedDependency[PriceAdmin],
        viewer: NamedDependency[Viewer],  # asked for so that the administrators-only check runs
        request: PortalRequest,
    ) -> Response[None]:
        form = await request.form()
        await price_admin.remove(str(form.get("model") or ""))
        return see_other(f"{PRICES}?saved=removed")
