"""The knowledge search results cache: a repeated search served from Redis without an embedding call, fresh
results once a document is added, deleted or re-indexed, nothing shared across tenants; and the response cache
of a /v1 chat completion with knowledge, keyed by the passages it injects (the official `openai` SDK)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.knowledge.search_cache import normalised_question
from app.settings import Settings
from db.knowledge import KnowledgeChunk
from db.session import tenant_session
from tests.integration.knowledge import test_search
from tests.integration.knowledge.test_ingestion import (
    BASES,
    CHANNEL,
    TERMINAL,
    markdown,
    setup_base,
    uploaded,
    wait_for_document,
)
from tests.integration.knowledge.test_knowledge_bases import create_base
from tests.integration.knowledge.test_knowledge_chat import chat_requests, sdk
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key
from tests.support.jobs import running_worker
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

SEARCH = f"{BASES}/search"
QUESTION = "Who holds the key of drawer 3?"
SPARE_KEY = b"# Front desk\n\nThe front desk keeps a spare key of drawer 3 for keeper 3.\n"


async def searched(client: Client, headers: dict[str, str], base_id: str, query: str, **fields: Any) -> Any:
    response = await client.post(SEARCH, json={"query": query, "base_ids": [base_id], **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def passages_of(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, document_id: str
) -> set[str]:
    async with tenant_session(session_maker, tenant.id) as session:
        return set(
            await session.scalars(
                select(KnowledgeChunk.text).where(
                    KnowledgeChunk.document_id == UUID(document_id), KnowledgeChunk.level == "passage"
                )
            )
        )


async def shared_base(client: Client, upstream: MockUpstream, tenant: TenantRows, auth_headers: AuthHeaders) -> str:
    """The organization's base (everyone reads it), chunked small: a dozen rules, two to a passage."""
    admin = auth_headers(tenant.admin)
    return str((await setup_base(client, upstream, admin, admin, name="Rules", scope="tenant"))["id"])


def test_the_question_is_compared_normalised() -> None:
    # "KEY" in full-width letters, a tab, a line break, runs of spaces.
    question = "  Who\tHOLDS the \uff2b\uff25\uff39\n of  drawer 3? "
    assert normalised_question(question) == "who holds the key of drawer 3?"
    assert normalised_question("Straße") == normalised_question("STRASSE")


async def test_a_repeated_search_is_served_without_an_embedding_call_and_only_to_its_own_tenant(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    redis_url: str,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base_id = await shared_base(client, upstream, tenant_a, auth_headers)
    async with running_worker(settings):
        document = await uploaded(client, admin, base_id, "rules.md", markdown(12))
        assert (await wait_for_document(client, admin, document, TERMINAL))["status"] == "ready"
    calls = upstream.calls[CHANNEL]

    first = await searched(client, user, base_id, QUESTION)
    assert upstream.calls[CHANNEL] == calls + 1
    assert first
    # Another person of the tenant (another key: the query vector cache does not serve them), the question
    # written otherwise: the results as they were, and no embedding call, so nobody pays for it.
    again = await searched(client, admin, base_id, "  who HOLDS the key of\tdrawer 3?  ")
    assert again == first
    assert upstream.calls[CHANNEL] == calls + 1
    # Every parameter that changes the results is part of the key: each its own entry, under the tenant's hash tag.
    variants: list[dict[str, Any]] = [
        {"limit": 2},
        {"mode": "vector"},
        {"mode": "text"},
        {"diversity": True},
        {"filters": {"content_types": ["x/y"]}},
    ]
    for fields in variants:
        await searched(client, admin, base_id, QUESTION, **fields)
    assert await searched(client, admin, base_id, QUESTION, filters={"content_types": ["x/y"]}) == []
    redis = Redis.from_url(redis_url)
    try:
        assert len(await redis.keys(f"lyss:gw:{{{tenant_a.id.hex}}}:kb:search:*")) == 1 + len(variants)
    finally:
        await redis.aclose()

    # The other tenant: the cache looks nothing up before it knows the caller reads the bases named.
    outsider = auth_headers(tenant_b.user)
    refused = await client.post(SEARCH, json={"query": QUESTION, "base_ids": [base_id]}, headers=outsider)
    assert refused.status_code == 404, refused.text
    # Its own base, the identical question: its own search, its own embedding call.
    key = await test_search.embedder(client, tenant_b, upstream, auth_headers)
    other_base = await create_base(client, outsider)
    await test_search.add_document(
        client, session_maker, tenant_b, key, other_base["id"], "desk.md", ["Keeper 3 holds the key of drawer 3."]
    )
    other_channel = f"kb-embed-{tenant_b.slug}"
    other_calls = upstream.calls[other_channel]
    theirs = await searched(client, outsider, other_base["id"], QUESTION)
    assert [hit["text"] for hit in theirs] == ["Keeper 3 holds the key of drawer 3."]
    assert upstream.calls[other_channel] == other_calls + 1


async def test_adding_deleting_or_re_indexing_a_document_gives_fresh_results(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base_id = await shared_base(client, upstream, tenant_a, auth_headers)
    async with running_worker(settings):
        rules = await uploaded(client, admin, base_id, "rules.md", markdown(12))
        assert (await wait_for_document(client, admin, rules, TERMINAL))["status"] == "ready"
        before = await searched(client, user, base_id, QUESTION)
        assert {hit["document_id"] for hit in before} == {rules["id"]}
        assert await searched(client, user, base_id, QUESTION) == before  # cached

        # Added: the new document's passage is found.
        desk = await uploaded(client, admin, base_id, "desk.md", SPARE_KEY)
        assert (await wait_for_document(client, admin, desk, TERMINAL))["status"] == "ready"
        added = await searched(client, user, base_id, QUESTION)
        assert desk["id"] in {hit["document_id"] for hit in added}

        # Re-indexed with another chunking: the passages as they are now, not as they were cut before.
        changed = await client.patch(f"{BASES}/{base_id}", json={"chunk_tokens": 200}, headers=admin)
        assert changed.status_code == 200, changed.text
        for document in (rules, desk):
            assert (await wait_for_document(client, admin, document, {"ready"}))["job_id"] != document["job_id"]
        recut = await searched(client, user, base_id, QUESTION)
        old_texts = {hit["text"] for hit in added if hit["document_id"] == rules["id"]}
        new_texts = {hit["text"] for hit in recut if hit["document_id"] == rules["id"]}
        current = await passages_of(session_maker, tenant_a, rules["id"])
        assert old_texts - current  # passages cut at 64 tokens that are gone
        assert new_texts
        assert new_texts <= current

    # Deleted: never served again, though the same search was cached with it a moment ago.
    deleted = await client.delete(f"{BASES}/{base_id}/documents/{desk['id']}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    after = await searched(client, user, base_id, QUESTION)
    assert after
    assert desk["id"] not in {hit["document_id"] for hit in after}
    assert all("spare key" not in hit["text"] for hit in after)


@pytest.mark.parametrize("stream", [False, True])
async def test_v1_knowledge_answers_are_cached_by_the_injected_passages_and_miss_after_a_re_index(
    stream: bool,
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base_id = await shared_base(client, upstream, tenant_a, auth_headers)
    await add_channel(client, admin, upstream, "answers")
    upstream.behave("answers", replies=["Keeper 3 [1]."] * 10)
    key, _ = await issue_key(client, user, response_cache="on")
    api = sdk(client, key)
    question: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "stream": stream,
        "extra_body": {"knowledge": {"base_ids": [base_id]}},
    }

    async def asked() -> tuple[str, str, list[Any]]:
        """(x-lyss-cache, the answer's text, its citations)."""
        raw = await api.chat.completions.with_raw_response.create(**question)
        if not stream:
            completion = raw.parse()
            text = completion.choices[0].message.content or ""
            return raw.headers["x-lyss-cache"], text, (completion.model_extra or {})["lyss_citations"]
        chunks = [chunk async for chunk in raw.parse()]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        return raw.headers["x-lyss-cache"], text, (chunks[-1].model_extra or {})["lyss_citations"]

    async with running_worker(settings):
        rules = await uploaded(client, admin, base_id, "rules.md", markdown(12))
        assert (await wait_for_document(client, admin, rules, TERMINAL))["status"] == "ready"
        calls = upstream.calls["answers"]

        first = await asked()
        second = await asked()

        assert first[0] == "miss"
        assert first[1] == "Keeper 3 [1]."
        assert first[2]
        # The same question, the same passages: the answer from the cache, with this call's citations.
        assert second == ("hit", first[1], first[2])
        assert upstream.calls["answers"] == calls + 1

        changed = await client.patch(f"{BASES}/{base_id}", json={"chunk_tokens": 200}, headers=admin)
        assert changed.status_code == 200, changed.text
        assert (await wait_for_document(client, admin, rules, {"ready"}))["job_id"] != rules["job_id"]
        third = await asked()

    # The source was re-cut: other passages went in, so the provider answered again.
    assert third[0] == "miss"
    assert upstream.calls["answers"] == calls + 2
    sent = chat_requests(upstream)
    assert sent[-1]["messages"][0]["content"] != sent[-2]["messages"][0]["content"]
