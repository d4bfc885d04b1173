"""The portal's model prices page (admins): the built-in list beside the organization's prices, searchable and
grouped by provider; overrides typed as money, refused when wrong, removed to fall back to the list."""

from __future__ import annotations

import html
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import ModelPrice
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def row_of(page: str, model: str) -> str:
    found = re.search(rf'<tr id="price-{re.escape(model)}">(.*?)</tr>', page, re.S)
    assert found, model
    return found[1]


def group_ids(page: str) -> list[str]:
    return re.findall(r'<section class="card" id="group-([^"]+)">', page)


async def stored(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> list[tuple[object, ...]]:
    async with tenant_session(session_maker, tenant.id) as session:
        rows = await session.scalars(select(ModelPrice).order_by(ModelPrice.model))
        return [(row.model, row.prompt_price, row.cached_prompt_price, row.completion_price) for row in rows]


async def test_the_page_shows_the_dated_list_beside_the_served_models_and_filters_them(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "ours", models=["gpt-4o-mini", "gpt-test"])
    await sign_in(client, tenant_a, tenant_a.admin.email)
    page = (await client.get("/portal/prices")).text
    assert re.search(r'<time datetime="2026-\d\d-\d\d" id="price-list-date">', page)
    assert group_ids(page) == ["openai", "anthropic", "deepseek", "zhipu", "cohere", "jina", "other"]
    # A rerank model's "completion" price is per search unit, not per token: the group says so.
    cohere = page.split('id="group-cohere"', 1)[1].split("</section>", 1)[0]
    assert "price per million search units" in cohere
    assert "search units" not in page.split('id="group-openai"', 1)[1].split("</section>", 1)[0]
    listed = row_of(page, "gpt-4o-mini")
    assert "$0.15" in listed
    assert "$0.075" in listed
    assert "$0.60" in listed
    assert 'class="badge ok">served' in listed
    assert "The built-in price" in listed
    assert 'class="badge ok">served' in row_of(page, "gpt-test")  # unlisted: in the other group
    assert "$0.15 / 1M tokens" in page
    assert 'id="not-applied"' not in page

    searched = (await client.get("/portal/prices", params={"q": "HAIKU"})).text
    assert group_ids(searched) == ["anthropic"]
    assert 'id="price-claude-3-5-haiku"' in searched
    assert 'id="price-claude-sonnet-4"' not in searched
    deepseek = (await client.get("/portal/prices", params={"provider": "deepseek"})).text
    assert group_ids(deepseek) == ["deepseek"]
    nothing = (await client.get("/portal/prices", params={"q": "x" * 5000, "provider": "<nope>"})).text
    assert group_ids(nothing) == []
    assert "No model matches." in nothing


async def test_an_override_is_typed_as_money_shown_beside_the_list_and_removed_back_to_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    prefilled = (await client.get("/portal/prices", params={"model": "gpt-4o-mini"})).text
    assert 'value="$0.15"' in prefilled
    assert 'value="$0.075"' in prefilled

    saved = await client.post(
        "/portal/prices",
        data={
            "csrf_token": token,
            "model": "gpt-4o-mini",
            "prompt_price": "$0.20",
            "cached_prompt_price": "0.05",
            "completion_price": "0.8",
        },
    )
    assert saved.status_code == 303
    assert await stored(session_maker, tenant_a) == [("gpt-4o-mini", 200_000, 50_000, 800_000)]
    page = (await client.get(saved.headers["location"])).text
    assert "The price is saved" in page
    row = row_of(page, "gpt-4o-mini")
    assert "$0.15" in row
    assert "$0.20" in row
    assert "$0.80" in row
    assert "Remove" in row

    without_cache = await client.post(
        "/portal/prices",
        data={"csrf_token": token, "model": "my-model", "prompt_price": "1", "completion_price": "2"},
    )
    assert without_cache.status_code == 303
    assert ("my-model", 1_000_000, None, 2_000_000) in await stored(session_maker, tenant_a)
    assert "$2.00" in row_of((await client.get("/portal/prices")).text, "my-model")

    removed = await client.post("/portal/prices/delete", data={"csrf_token": token, "model": "gpt-4o-mini"})
    assert removed.status_code == 303
    assert [row[0] for row in await stored(session_maker, tenant_a)] == ["my-model"]
    assert "The built-in price" in row_of((await client.get("/portal/prices")).text, "gpt-4o-mini")
    again = await client.post("/portal/prices/delete", data={"csrf_token": token, "model": "gpt-4o-mini"})
    assert again.status_code == 404


async def test_wrong_prices_are_shown_next_to_their_fields_and_save_nothing(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)

    async def post(**fields: str) -> str:
        data = {"model": "gpt-4o", "prompt_price": "1", "cached_prompt_price": "", "completion_price": "2"} | fields
        response = await client.post("/portal/prices", data={"csrf_token": token, **data})
        assert response.status_code == 400, fields
        return response.text

    empty = await post(model="", prompt_price="", completion_price="")
    for field in ("model", "prompt_price", "completion_price"):
        assert field_error(empty, field) == "This field is required."
    wrong = await post(prompt_price="abc", cached_prompt_price="-1", completion_price="0.0000001")
    assert (
        html.unescape(field_error(wrong, "prompt_price") or "")
        == "'abc' is not an amount of money; write it like 1.23."
    )
    assert field_error(wrong, "cached_prompt_price") == "An amount of money cannot be negative."
    assert "millionth" in (field_error(wrong, "completion_price") or "")
    assert 'value="abc"' in wrong  # what was typed stays in the form
    dearer_cache = await post(cached_prompt_price="1.5")
    assert (
        field_error(dearer_cache, "cached_prompt_price")
        == "The cached prompt price cannot be more than the prompt price."
    )
    too_long = await post(model="m" * 101)
    assert field_error(too_long, "model") == "The model name must be 1-100 characters long."
    huge = await post(prompt_price="1e40")
    assert field_error(huge, "prompt_price") == "That amount is larger than Lyss can count exactly."
    assert await stored(session_maker, tenant_a) == []


async def test_an_organization_in_another_currency_sees_the_list_for_reference_only(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    admin = auth_headers(tenant_a.admin)
    assert (await client.patch("/api/tenant", json={"currency": "EUR"}, headers=admin)).status_code == 200
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert (
        await client.post(
            "/portal/prices",
            data={"csrf_token": token, "model": "gpt-4o-mini", "prompt_price": "0.14", "completion_price": "0.55"},
        )
    ).status_code == 303
    page = (await client.get("/portal/prices")).text
    assert 'id="not-applied"' in page
    assert "shown for reference only and are not charged" in page
    row = row_of(page, "gpt-4o-mini")
    assert "$0.15" in row
    assert "€0.14" in row
    assert "The built-in price" not in row_of(page, "gpt-4o")
    prefilled = (await client.get("/portal/prices", params={"model": "gpt-4o"})).text
    assert 'value="$2.50"' not in prefilled  # a dollar price is not offered as a euro one


async def test_end_users_cannot_open_the_prices_page(client: Client, tenant_a: TenantRows) -> None:
    await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.get("/portal/prices")
    assert response.status_code == 403
