"""Who pays a /v1 chat completion's knowledge search: the API key that made the call, within its own limits, never
the user's built-in chat key; the official `openai` SDK as the client."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.client import CHAT_TOKEN_NAME
from db.provider import ApiToken
from db.session import tenant_session
from tests.integration.knowledge.test_knowledge_bases import EMBEDDER
from tests.integration.knowledge.test_knowledge_chat import chat_requests, chat_with_handbook, sdk
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import issue_key, set_price, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def chat_key(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> ApiToken | None:
    async with tenant_session(session_maker, tenant.id) as session:
        return await session.scalar(
            select(ApiToken).where(ApiToken.user_id == tenant.user.id, ApiToken.name == CHAT_TOKEN_NAME)
        )


async def test_the_api_key_pays_for_its_knowledge_search_and_the_chat_key_is_not_touched(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, _, _ = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await set_price(client, admin, EMBEDDER, 1_000_000, 0)  # a credit a token: the search costs something
    key, token = await issue_key(client, user)
    api = sdk(client, key)
    rows_before = len(await usage_rows(session_maker, tenant_a, 2))  # the two documents embedded

    completion = await api.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "When does the office open?"}],
        extra_body={"knowledge": {"base_ids": [base_id]}},
    )

    assert completion.choices[0].message.content == "It opens at nine [1]."
    rows = (await usage_rows(session_maker, tenant_a, rows_before + 2))[rows_before:]
    by_endpoint = {row.endpoint: row for row in rows}
    assert set(by_endpoint) == {"embeddings", "chat"}
    assert by_endpoint["embeddings"].token_id == token_id_of(token)
    assert by_endpoint["embeddings"].model == EMBEDDER
    assert by_endpoint["embeddings"].cost > 0
    assert by_endpoint["chat"].token_id == token_id_of(token)
    # The user's chat key paid nothing (it need not even exist).
    chat = await chat_key(session_maker, tenant_a)
    assert chat is None or chat.used_quota == 0
    assert chat is None or all(row.token_id != chat.id for row in rows)


async def test_a_key_that_cannot_pay_the_embedding_is_refused_and_the_chat_key_does_not_pay_instead(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, _, _ = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await set_price(client, admin, EMBEDDER, 1_000_000, 0)
    # The user's chat key has embedded the same question within the minute (and could pay again): neither that
    # vector nor that key may pay for the API keys. Another limit, so those searches' results are not reused.
    warm = await client.post(
        f"/api/knowledge-bases/{base_id}/search", json={"query": "When does the office open?", "limit": 3}, headers=user
    )
    assert warm.status_code == 200, warm.text
    rows_before = len(await usage_rows(session_maker, tenant_a, 4))  # the documents' two embeddings, the search's
    chat = await chat_key(session_maker, tenant_a)
    assert chat is not None
    assert chat.used_quota > 0
    broke, broke_token = await issue_key(client, user, name="broke", quota=1)
    not_allowed, not_allowed_token = await issue_key(client, user, name="chat only", allowed_models=["gpt-test"])
    chats = len(chat_requests(upstream))
    question: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "When does the office open?"}],
        "extra_body": {"knowledge": {"base_ids": [base_id]}},
    }

    with pytest.raises(openai.RateLimitError) as no_budget:
        await sdk(client, broke).chat.completions.create(**question)
    with pytest.raises(openai.APIStatusError) as no_model:
        await sdk(client, not_allowed).chat.completions.create(**question)

    assert no_budget.value.status_code == 429
    assert isinstance(no_budget.value.body, dict)
    assert no_budget.value.body["message"]
    assert 400 <= no_model.value.status_code < 500
    assert isinstance(no_model.value.body, dict)
    assert EMBEDDER in no_model.value.body["message"]
    assert len(chat_requests(upstream)) == chats  # nothing answered without the knowledge asked for
    rows = (await usage_rows(session_maker, tenant_a, rows_before + 2))[rows_before:]
    refusals = {(row.token_id, row.endpoint, row.outcome) for row in rows}
    assert refusals == {
        (token_id_of(broke_token), "embeddings", "refused"),
        (token_id_of(not_allowed_token), "embeddings", "refused"),
    }
    after = await chat_key(session_maker, tenant_a)
    assert after is not None
    assert after.used_quota == chat.used_quota
