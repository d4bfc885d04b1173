"""Model aliases tried in turn, routing strategies, and the headers naming what answered: over real HTTP to the
loopback mock provider, with the official `openai` SDK where a client would use it."""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import UUID

import openai
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key, sdk_http, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


def names_field(response: Any, field: str) -> bool:
    """The refusal names the field: in its message, or in a validation error's key or message."""
    body = response.json()
    return field in body["detail"] or any(
        str(item.get("key", "")).startswith(field) or f"`{field}`" in item.get("message", "")
        for item in body.get("extra") or []
    )


async def put_alias(client: Client, admin: dict[str, str], name: str, models: Any) -> Any:
    return await client.put(f"/api/model-aliases/{name}", json={"models": models}, headers=admin)


async def test_an_alias_falls_back_to_its_next_model_when_every_channel_of_the_first_fails(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    for name in ("gpt-one", "gpt-two"):
        await add_channel(client, admin, upstream, name, models=["gpt-4o"])
        upstream.behave(name, status=500)
    claude = await add_channel(
        client, admin, upstream, "sonnet", models=["claude-sonnet"], model_mapping={"claude-sonnet": "sonnet-up"}
    )
    await set_price(client, admin, "gpt-4o", 5_000_000, 10_000_000)
    await set_price(client, admin, "claude-sonnet", 1_000_000, 1_000_000)
    created = await put_alias(client, admin, "smart", ["gpt-4o", "claude-sonnet"])
    assert created.status_code == 200, created.text
    assert created.json() == {"name": "smart", "models": ["gpt-4o", "claude-sonnet"]}
    key, _ = await issue_key(client, auth_headers(tenant_a.user))

    gpt = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0)
    listed = {model.id async for model in gpt.models.list()}
    assert {"smart", "gpt-4o", "claude-sonnet"} <= listed
    raw = await gpt.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hello there"}], max_tokens=50
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert (raw.headers["x-lyss-model"], raw.headers["x-lyss-channel"]) == ("claude-sonnet", "sonnet")
    assert upstream.calls["gpt-one"] == upstream.calls["gpt-two"] == 1
    assert upstream.bodies[-1] == ("sonnet", upstream.bodies[-1][1])
    assert upstream.bodies[-1][1]["model"] == "sonnet-up"

    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.model, row.upstream_model, row.channel_id) == ("claude-sonnet", "sonnet-up", UUID(claude["id"]))
    assert row.details["alias"] == "smart"
    assert [(item["model"], item["status"]) for item in row.details["attempts"]] == [
        ("gpt-4o", 500),
        ("gpt-4o", 500),
        ("claude-sonnet", 200),
    ]
    # Settled at the price of the model that answered (2 prompt and 5 completion tokens at 1 credit each).
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (2, 5, 7)

    # Streamed too: the failing channels now cool down and the alias goes straight to its next model.
    stream = await gpt.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hello there"}], max_tokens=50, stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text.split() == ["w0", "w1", "w2", "w3", "w4"]
    assert upstream.calls["sonnet"] == 2


async def test_a_key_that_cannot_afford_the_dearest_model_of_an_alias_is_refused_before_any_call(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "gpt", models=["gpt-4o"])
    await add_channel(client, admin, upstream, "cheap", models=["deepseek-chat"])
    await set_price(client, admin, "gpt-4o", 5_000_000, 10_000_000)
    await set_price(client, admin, "deepseek-chat", 1_000_000, 1_000_000)
    assert (await put_alias(client, admin, "smart", ["deepseek-chat", "gpt-4o"])).status_code == 200
    key, _ = await issue_key(client, auth_headers(tenant_a.user), quota=600)
    body = chat_body("smart", max_tokens=100)
    # At the cheap model's price alone this call would fit the quota (about 200 credits at worst) ...
    direct = await client.post(
        "/v1/chat/completions", json=chat_body("deepseek-chat", max_tokens=100), headers=bearer(key)
    )
    assert direct.status_code == 200, direct.text
    calls = sum(upstream.calls.values())
    # ... but through the alias it may be served by gpt-4o, so it is reserved at gpt-4o's price, and refused.
    refused = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert sum(upstream.calls.values()) == calls
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert sorted((row.model, row.outcome) for row in rows) == [("deepseek-chat", "ok"), ("smart", "refused")]


async def test_latency_routing_sends_most_calls_to_the_faster_channel(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    # Same priority and weight: by priority alone they would share the calls about evenly.
    await add_channel(client, admin, upstream, "quick", models=["gpt-lat"])
    await add_channel(client, admin, upstream, "sluggish", models=["gpt-lat"])
    upstream.behave("sluggish", hang_seconds=0.05)
    routed = await client.put("/api/model-routing/gpt-lat", json={"strategy": "latency"}, headers=admin)
    assert routed.status_code == 200, routed.text
    assert (await client.get("/api/model-routing", headers=admin)).json() == [
        {"model": "gpt-lat", "strategy": "latency"}
    ]
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for _ in range(4):  # warm-up: each channel is measured at least once
        warm = await client.post("/v1/chat/completions", json=chat_body("gpt-lat"), headers=bearer(key))
        assert warm.status_code == 200, warm.text
    assert upstream.calls["quick"] >= 1
    assert upstream.calls["sluggish"] >= 1
    upstream.calls.clear()
    answered: Counter[str] = Counter()
    for _ in range(50):
        response = await client.post("/v1/chat/completions", json=chat_body("gpt-lat"), headers=bearer(key))
        assert response.status_code == 200, response.text
        answered[response.headers["x-lyss-channel"]] += 1
    assert answered["quick"] >= 40, answered
    assert upstream.calls["quick"] == answered["quick"]


async def test_least_in_flight_routing_serves_calls(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "low", models=["gpt-idle"], priority=1)
    await add_channel(client, admin, upstream, "high", models=["gpt-idle"], priority=5)
    routed = await client.put("/api/model-routing/gpt-idle", json={"strategy": "least_in_flight"}, headers=admin)
    assert routed.status_code == 200, routed.text
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    # One call at a time: none is in flight, so priority breaks the tie every time.
    for _ in range(5):
        response = await client.post("/v1/chat/completions", json=chat_body("gpt-idle"), headers=bearer(key))
        assert response.headers["x-lyss-channel"] == "high"
    assert (await client.delete("/api/model-routing/gpt-idle", headers=admin)).status_code == 204
    assert (await client.get("/api/model-routing", headers=admin)).json() == []


async def test_another_tenants_alias_does_not_resolve(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin_a = auth_headers(tenant_a.admin)
    await add_channel(client, admin_a, upstream, "gpt", models=["gpt-4o"])
    assert (await put_alias(client, admin_a, "smart", ["gpt-4o"])).status_code == 200
    admin_b = auth_headers(tenant_b.admin)
    await add_channel(client, admin_b, upstream, "other", models=["gpt-4o"])
    key_b, _ = await issue_key(client, auth_headers(tenant_b.user))
    response = await client.post("/v1/chat/completions", json=chat_body("smart"), headers=bearer(key_b))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"
    assert upstream.calls["gpt"] == upstream.calls["other"] == 0
    assert (await client.get("/api/model-aliases/smart", headers=admin_b)).status_code == 404
    assert (await client.get("/api/model-aliases", headers=admin_b)).json() == []
    assert (await client.delete("/api/model-aliases/smart", headers=admin_b)).status_code == 404
    assert (await client.get("/api/model-aliases/smart", headers=admin_a)).json()["models"] == ["gpt-4o"]


async def test_an_alias_change_or_removal_takes_effect_at_once(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "first", models=["model-one"])
    await add_channel(client, admin, upstream, "second", models=["model-two"])
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await put_alias(client, admin, "fast", ["model-one"])).status_code == 200
    one = await client.post("/v1/chat/completions", json=chat_body("fast"), headers=bearer(key))
    assert one.headers["x-lyss-model"] == "model-one"
    assert (await put_alias(client, admin, "fast", ["model-two"])).status_code == 200
    two = await client.post("/v1/chat/completions", json=chat_body("fast"), headers=bearer(key))
    assert (two.headers["x-lyss-model"], two.headers["x-lyss-channel"]) == ("model-two", "second")
    assert (await client.delete("/api/model-aliases/fast", headers=admin)).status_code == 204
    gone = await client.post("/v1/chat/completions", json=chat_body("fast"), headers=bearer(key))
    assert gone.status_code == 404


async def test_bad_alias_and_strategy_input_is_refused_naming_the_field(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "gpt", models=["gpt-4o", "gpt-mini"])
    assert (await put_alias(client, admin, "smart", ["gpt-4o"])).status_code == 200
    cases: list[tuple[str, Any, int, str]] = [
        ("gpt-4o", ["gpt-mini"], 409, "name"),  # a served model's name
        ("fast", [], 400, "models"),
        ("fast", ["no-such-model"], 400, "models"),
        ("fast", ["smart"], 400, "models"),  # an alias naming an alias
        ("fast", ["fast"], 400, "models"),  # itself
        ("fast", ["gpt-4o", "gpt-4o"], 400, "models"),
        ("fast", "gpt-4o", 400, "models"),  # wrong type
        ("fast", [1], 400, "models"),
        ("fast", ["x" * 101], 400, "models"),
        ("x" * 101, ["gpt-4o"], 400, "name"),
    ]
    for name, models, status, named in cases:
        response = await put_alias(client, admin, name, models)
        assert response.status_code == status, (name, models, response.text)
        assert names_field(response, named), (name, models, response.text)
    unknown = await client.put("/api/model-aliases/fast", json={"models": ["gpt-4o"], "extra": 1}, headers=admin)
    assert unknown.status_code == 400
    assert names_field(unknown, "extra"), unknown.text
    empty = await client.put("/api/model-aliases/fast", json={}, headers=admin)
    assert empty.status_code == 400
    assert names_field(empty, "models")
    assert (await client.get("/api/model-aliases", headers=admin)).json() == [{"name": "smart", "models": ["gpt-4o"]}]
    assert (await client.get("/api/model-aliases/fast", headers=admin)).status_code == 404

    for model, body, named in [
        ("gpt-4o", {"strategy": "fastest"}, "strategy"),
        ("gpt-4o", {}, "strategy"),
        ("gpt-4o", {"strategy": 3}, "strategy"),
        ("no-such-model", {"strategy": "latency"}, "model"),
    ]:
        response = await client.put(f"/api/model-routing/{model}", json=body, headers=admin)
        assert response.status_code == 400, (model, body, response.text)
        assert names_field(response, named), response.text
    assert (await client.get("/api/model-routing", headers=admin)).json() == []
    user = auth_headers(tenant_a.user)
    assert (await put_alias(client, user, "mine", ["gpt-4o"])).status_code == 403


async def test_an_alias_reserves_at_the_dearest_cache_write_price_of_its_models(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "plain", models=["deepseek-chat"])
    await add_channel(client, admin, upstream, "caching", models=["claude-cache"])
    await set_price(client, admin, "deepseek-chat", 1_000_000, 1_000_000)
    # The same prompt and completion prices, but a prompt token written to the cache costs twenty times as much.
    priced = await client.put(
        "/api/model-prices/claude-cache",
        json={"prompt_price": 1_000_000, "completion_price": 1_000_000, "cache_write_price": 20_000_000},
        headers=admin,
    )
    assert priced.status_code == 200, priced.text
    assert (await put_alias(client, admin, "thrifty", ["deepseek-chat", "claude-cache"])).status_code == 200
    key, _ = await issue_key(client, auth_headers(tenant_a.user), quota=600)
    # Either model alone at its plain prices fits the quota; an answer that wrote its whole prompt to the cache
    # would not, so the alias is refused before any call rather than settled above what was reserved.
    refused = await client.post("/v1/chat/completions", json=chat_body("thrifty", max_tokens=100), headers=bearer(key))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert upstream.calls["plain"] == upstream.calls["caching"] == 0
