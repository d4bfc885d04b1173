"""`POST /api/channels/fetch-models` against the mock provider: OpenAI's and Anthropic's model lists, a stored
channel's key, and every provider failure as a 400 naming the field, never a 500 and never the key."""

from __future__ import annotations

import aiohttp
import pytest

from app.gateway import admin
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

FETCH = "/api/channels/fetch-models"


async def test_an_openai_format_provider_lists_its_models_asked_with_the_typed_key(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    upstream.behave("listing", models=["zeta-1", "alpha-2", "alpha-2"])
    body = {"type": "openai-compatible", "base_url": upstream.base_url("listing"), "key": "sk-typed"}
    response = await client.post(FETCH, json=body, headers=auth_headers(tenant_a.admin))
    assert response.status_code == 200, response.text
    assert response.json() == {"models": ["alpha-2", "zeta-1"]}
    seen = upstream.headers_seen[-1]
    assert (seen["path_qs"], seen["Authorization"]) == ("/listing/v1/models", "Bearer sk-typed")


async def test_an_anthropic_channel_is_asked_with_its_own_headers(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    upstream.behave("claude", models=["claude-test"])
    body = {"type": "anthropic", "base_url": upstream.base_url("claude"), "key": "sk-ant-typed"}
    response = await client.post(FETCH, json=body, headers=auth_headers(tenant_a.admin))
    assert response.json() == {"models": ["claude-test"]}
    seen = upstream.headers_seen[-1]
    assert seen["x-api-key"] == "sk-ant-typed"
    assert seen["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in seen
    assert seen["path_qs"] == "/claude/v1/models?limit=1000"


async def test_a_gemini_channel_lists_its_chat_models_asked_with_its_key_header(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    upstream.behave("gem", models=["gemini-b", "gemini-a"])
    body = {"type": "gemini", "base_url": upstream.gemini_base_url("gem"), "key": "AIza-typed"}
    response = await client.post(FETCH, json=body, headers=auth_headers(tenant_a.admin))
    # `models/` left off; the embedding-only model (no generateContent) left out.
    assert response.json() == {"models": ["gemini-a", "gemini-b"]}
    seen = upstream.headers_seen[-1]
    assert (seen["path_qs"], seen["x-goog-api-key"]) == ("/gem/v1beta/models?pageSize=1000", "AIza-typed")
    assert "Authorization" not in seen


async def test_a_stored_channel_is_asked_with_its_stored_key_and_url(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "stored")
    response = await client.post(FETCH, json={"channel_id": channel["id"]}, headers=auth_headers(tenant_a.admin))
    assert response.json() == {"models": ["mock-large", "mock-small"]}
    assert upstream.headers_seen[-1]["Authorization"] == "Bearer key-of-stored"


@pytest.mark.parametrize(
    ("behavior", "message"),
    [
        ({"status": 401}, "The provider refused the API key (HTTP 401); check the key."),
        ({"status": 404}, "The provider answered HTTP 404 to its model list"),
        ({"garbage": True}, "The provider's answer is not a model list"),
        ({"models": []}, "The provider lists no models for this key"),
    ],
)
async def test_provider_failures_are_a_400_on_the_models_field_without_the_key(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    behavior: dict[str, object],
    message: str,
) -> None:
    upstream.behave("failing", **behavior)
    body = {"type": "openai", "base_url": upstream.base_url("failing"), "key": "sk-never-shown"}
    response = await client.post(FETCH, json=body, headers=auth_headers(tenant_a.admin))
    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)
    assert "sk-never-shown" not in response.text


async def test_an_unreachable_or_silent_provider_is_a_400_too(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = auth_headers(tenant_a.admin)
    closed = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "key": "sk-x"}
    unreachable = await client.post(FETCH, json=closed, headers=headers)
    assert unreachable.status_code == 400
    assert unreachable.json()["detail"].startswith("Could not reach the provider")
    monkeypatch.setattr(admin, "MODEL_LIST_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    upstream.behave("slow", hang_seconds=2)
    slow = {"type": "openai", "base_url": upstream.base_url("slow"), "key": "sk-x"}
    timed_out = await client.post(FETCH, json=slow, headers=headers)
    assert timed_out.status_code == 400
    assert "did not answer within" in timed_out.json()["detail"]


async def test_bad_requests_name_their_field(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.admin)
    azure = await client.post(
        FETCH, json={"type": "azure-openai", "base_url": upstream.base_url("az"), "key": "k"}, headers=headers
    )
    assert (azure.status_code, azure.json()["detail"][:32]) == (400, "Azure OpenAI serves the deployme")
    untyped = await client.post(FETCH, json={"key": "k"}, headers=headers)
    assert (untyped.status_code, untyped.json()["detail"]) == (400, "Choose the channel's type first.")
    keyless = await client.post(FETCH, json={"type": "openai"}, headers=headers)
    assert keyless.json()["detail"] == "Enter an API key to fetch the models with."
    unknown_type = await client.post(FETCH, json={"type": "nope", "key": "k"}, headers=headers)
    assert "Unknown channel type 'nope'" in unknown_type.json()["detail"]
    for body in ({"key": ""}, {"key": 5}, {"base_url": "ftp://x"}, {"surprise": 1}, {"channel_id": "no"}):
        assert (await client.post(FETCH, json=body, headers=headers)).status_code == 400, body
    theirs = await add_channel(client, auth_headers(tenant_b.admin), upstream, "theirs")
    other = await client.post(FETCH, json={"channel_id": theirs["id"]}, headers=headers)
    assert other.status_code == 404
    assert upstream.calls["theirs"] == 0
    user = await client.post(FETCH, json={"type": "openai", "key": "k"}, headers=auth_headers(tenant_a.user))
    assert user.status_code == 403
