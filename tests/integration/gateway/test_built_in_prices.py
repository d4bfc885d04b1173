"""The built-in price list through the real gateway: a listed model without a price of the organization's costs
the list price, the organization's own price overrides it, `*` prices only what the list does not, and an
organization that counts in another currency than the list's is not charged list prices."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.price_list import price_list
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

USAGE = {"prompt_tokens": 1000, "completion_tokens": 2000}
MODELS = ["gpt-4o-mini", "claude-3-5-haiku-20241022", "gpt-test"]
UNPRICED_UNITS = {"image_price": None, "audio_second_price": None, "speech_price": None, "request_price": None}


def cost_at(prompt_price: int, completion_price: int) -> int:
    return math.ceil(USAGE["prompt_tokens"] * prompt_price / 1e6) + math.ceil(
        USAGE["completion_tokens"] * completion_price / 1e6
    )


def listed_cost(model: str) -> int:
    entry = price_list().find(model)
    assert entry is not None
    return cost_at(entry.prompt_price, entry.completion_price)


async def test_the_list_prices_a_listed_model_the_tenant_has_not_priced_and_the_tenant_overrides_it(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "listed", models=MODELS)
    upstream.behave("listed", reported_usage=USAGE)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    calls = 0

    async def charged(model: str) -> int:
        nonlocal calls
        response = await client.post("/v1/chat/completions", json=chat_body(model=model), headers=bearer(key))
        assert response.status_code == 200, response.text
        calls += 1
        return (await usage_rows(session_maker, tenant_a, calls))[-1].cost

    # No price of the tenant's: the list's, the dated snapshot at its family's; an unlisted model is free.
    assert await charged("gpt-4o-mini") == listed_cost("gpt-4o-mini") == 1350  # $0.15 and $0.60 per 1M
    assert await charged("claude-3-5-haiku-20241022") == listed_cost("claude-3-5-haiku") == 8800
    assert await charged("gpt-test") == 0

    # `*` prices the unlisted model only.
    await set_price(client, admin, "*", 5_000_000, 5_000_000)
    assert await charged("gpt-test") == cost_at(5_000_000, 5_000_000)
    assert await charged("gpt-4o-mini") == listed_cost("gpt-4o-mini")

    # The tenant's own price wins over the list; removed, the list's is back.
    await set_price(client, admin, "gpt-4o-mini", 1_000_000, 3_000_000)
    assert await charged("gpt-4o-mini") == cost_at(1_000_000, 3_000_000)
    listing = {row["model"]: row for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert listing["gpt-4o-mini"]["source"] == "tenant"
    assert listing["gpt-4o"] == {
        "model": "gpt-4o",
        "prompt_price": 2_500_000,
        "completion_price": 10_000_000,
        "cached_prompt_price": 1_250_000,
        "cache_write_price": None,
        **UNPRICED_UNITS,
        "source": "built-in",
    }
    assert (await client.delete("/api/model-prices/gpt-4o-mini", headers=admin)).status_code == 204
    assert await charged("gpt-4o-mini") == listed_cost("gpt-4o-mini")

    # Counting in euros: the list (US dollars) is not applied, `*` prices every model it has no price for.
    changed = await client.patch("/api/tenant", json={"currency": "EUR"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert await charged("gpt-4o-mini") == cost_at(5_000_000, 5_000_000)
    assert (await client.delete("/api/model-prices/*", headers=admin)).status_code == 204
    assert await charged("claude-3-5-haiku-20241022") == 0
    built_in = (await client.get("/api/model-prices/built-in", headers=admin)).json()
    assert (built_in["currency"], built_in["applies"]) == ("USD", False)
    assert built_in["as_of"].startswith("2026-")
    listed = {row["model"]: row for row in built_in["prices"]}
    assert (listed["gpt-4o-mini"]["provider"], listed["gpt-4o-mini"]["prompt_price"]) == ("openai", 150_000)
    assert (await client.get("/api/model-prices", headers=admin)).json() == []


async def test_a_cached_prompt_price_is_stored_and_shown_and_must_not_exceed_the_prompt_price(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    body: dict[str, Any] = {"prompt_price": 2_000_000, "completion_price": 8_000_000, "cached_prompt_price": 500_000}
    saved = await client.put("/api/model-prices/org-model", json=body, headers=admin)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {
        "model": "org-model",
        **body,
        "cache_write_price": None,
        **UNPRICED_UNITS,
        "source": "tenant",
    }
    listing = {row["model"]: row for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert listing["org-model"]["cached_prompt_price"] == 500_000
    dearer = await client.put(
        "/api/model-prices/org-model", json={**body, "cached_prompt_price": 2_000_001}, headers=admin
    )
    assert dearer.status_code == 400
    assert "cached prompt price" in dearer.json()["detail"]
    wrong_type = await client.put(
        "/api/model-prices/org-model", json={**body, "cached_prompt_price": "cheap"}, headers=admin
    )
    assert wrong_type.status_code == 400
    assert "cached_prompt_price" in wrong_type.text
    listing = {row["model"]: row for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert listing["org-model"]["cached_prompt_price"] == 500_000
    # An end user reads no prices.
    assert (await client.get("/api/model-prices/built-in", headers=auth_headers(tenant_a.user))).status_code == 403
