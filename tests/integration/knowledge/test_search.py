"""Knowledge search over HTTP on real PostgreSQL (RLS) with the mock provider's word vectors: the hybrid and
single-leg modes, filters, who reaches which base, reranking, diversity, what is refused and what is billed."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.gateway.client import CHAT_TOKEN_NAME
from db.knowledge import KnowledgeChunk, KnowledgeDocument
from db.provider import ApiToken
from db.session import tenant_session
from tests.integration.knowledge.test_knowledge_bases import BASES, EMBEDDER, add_user, create_base, join
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key, usage_rows
from tests.support.mock_upstream import MockUpstream, rerank_score
from tests.support.tenants import TenantRows

SEARCH = f"{BASES}/search"
OPENS = "The office opens at nine every weekday morning."
PARKING = "Parking is free in the underground garage for staff."
HOLIDAYS = "Holidays are booked in the portal before the end of March."
SICK = "Sick leave is reported to your manager by phone."


async def embedder(client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders) -> str:
    """An embeddings channel serving EMBEDDER (256-dimensional word vectors) and a key ingestion-like code embeds
    the chunks with, through the gateway."""
    admin = auth_headers(tenant.admin)
    name = f"kb-embed-{tenant.slug}"
    await add_channel(client, admin, upstream, name, models=[EMBEDDER, "other-embedder"])
    upstream.behave(name, dimensions=256)
    key, _ = await issue_key(client, admin)
    return key


async def embedded(client: Client, key: str, texts: list[str], model: str = EMBEDDER) -> list[list[float]]:
    response = await client.post(
        "/v1/embeddings", json={"model": model, "input": texts}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return [item["embedding"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]


async def add_document(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantRows,
    key: str,
    base_id: str,
    filename: str,
    passages: list[str],
    *,
    status: str = "ready",
    content_type: str = "text/plain",
    metadata: dict[str, Any] | None = None,
    created_at: datetime.datetime | None = None,
    model: str = EMBEDDER,
) -> tuple[UUID, list[UUID]]:
    """A document as ingestion leaves it: one section holding every passage, each passage embedded."""
    vectors = await embedded(client, key, passages, model)
    section_text = " ".join(passages)
    document_id = uuid7()
    async with tenant_session(session_maker, tenant.id) as session:
        session.add(
            KnowledgeDocument(
                id=document_id,
                base_id=UUID(base_id),
                filename=filename,
                content_type=content_type,
                size_bytes=len(section_text),
                content_hash=hashlib.sha256(f"{document_id}".encode()).hexdigest(),
                object_key=f"kb/{base_id}/{document_id}/{filename}",
                status=status,
                attributes=metadata or {},
                embedding_model=model,
                **({"created_at": created_at} if created_at else {}),
            )
        )
        await session.flush()
        section = KnowledgeChunk(
            id=uuid7(),
            base_id=UUID(base_id),
            document_id=document_id,
            level="section",
            position=0,
            section="Handbook",
            start_offset=0,
            end_offset=len(section_text),
            text=section_text,
            token_count=len(section_text) // 4,
            content_hash=hashlib.sha256(section_text.encode()).hexdigest(),
            language="english",
        )
        session.add(section)
        await session.flush()
        passage_ids, offset = [], 0
        for position, (text, vector) in enumerate(zip(passages, vectors, strict=True)):
            passage = KnowledgeChunk(
                id=uuid7(),
                base_id=UUID(base_id),
                document_id=document_id,
                parent_id=section.id,
                level="passage",
                position=position,
                page=1,
                section="Handbook",
                start_offset=offset,
                end_offset=offset + len(text),
                text=text,
                token_count=len(text) // 4,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                embedding=vector,
                embedding_dim=len(vector),
                embedding_model=model,
                language="english",
            )
            session.add(passage)
            passage_ids.append(passage.id)
            offset += len(text) + 1
        await session.commit()
    return document_id, passage_ids


async def handbook(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantRows,
    key: str,
    headers: dict[str, str],
    **fields: Any,
) -> tuple[str, UUID, UUID]:
    """A base of two ready documents: the office (markdown, ops, 2024) and the holidays (text, hr, 2025)."""
    base = await create_base(client, headers, **fields)
    office, _ = await add_document(
        client,
        session_maker,
        tenant,
        key,
        base["id"],
        "office.md",
        [OPENS, PARKING],
        content_type="text/markdown",
        metadata={"team": "ops", "tags": ["building"]},
        created_at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    holidays, _ = await add_document(
        client,
        session_maker,
        tenant,
        key,
        base["id"],
        "holidays.txt",
        [HOLIDAYS, SICK],
        metadata={"team": "hr", "tags": ["building", "people"]},
        created_at=datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC),
    )
    return base["id"], office, holidays


async def searched(client: Client, headers: dict[str, str], base_ids: list[str], query: str, **fields: Any) -> Any:
    response = await client.post(SEARCH, json={"query": query, "base_ids": base_ids, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def texts(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["text"] for hit in hits]


async def test_the_passage_sharing_the_query_s_words_comes_first_with_its_section_and_place(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, office, _ = await handbook(client, session_maker, tenant_a, key, user)

    hits = await searched(client, user, [base_id], "When does the office open at nine?")
    assert hits[0]["text"] == OPENS
    first = hits[0]
    assert (first["document_id"], first["filename"], first["base_id"]) == (str(office), "office.md", base_id)
    assert (first["page"], first["section"], first["start_offset"], first["end_offset"]) == (
        1,
        "Handbook",
        0,
        len(OPENS),
    )
    assert first["parent"]["text"] == f"{OPENS} {PARKING}"
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert sorted(texts(hits)) == sorted([OPENS, PARKING, HOLIDAYS, SICK])
    assert len(await searched(client, user, [base_id], "office", limit=1)) == 1

    # The one-base shorthand is the same search.
    response = await client.post(
        f"{BASES}/{base_id}/search", json={"query": "When does the office open at nine?"}, headers=user
    )
    assert response.status_code == 200, response.text
    assert response.json() == hits


async def test_vector_and_text_modes_search_by_one_leg_each(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)

    # By words: only what has them, stemmed in the base's language ("booking" finds "booked").
    assert texts(await searched(client, user, [base_id], "garage", mode="text")) == [PARKING]
    assert texts(await searched(client, user, [base_id], "booking", mode="text")) == [HOLIDAYS]
    assert await searched(client, user, [base_id], "zeppelin", mode="text") == []
    # A question matches the passages that have any of its words, the one with more first.
    assert texts(await searched(client, user, [base_id], "Is the garage free for a zeppelin?", mode="text")) == [
        PARKING
    ]
    assert sorted(texts(await searched(client, user, [base_id], "garage parking office", mode="text"))) == [
        PARKING,
        OPENS,
    ]
    # Search syntax is taken as written: a phrase, `or`, and a word to leave out.
    assert texts(await searched(client, user, [base_id], '"underground garage"', mode="text")) == [PARKING]
    assert sorted(texts(await searched(client, user, [base_id], "garage or holidays", mode="text"))) == [
        HOLIDAYS,
        PARKING,
    ]
    assert await searched(client, user, [base_id], "garage -staff", mode="text") == []
    # By meaning: every passage, nearest first, scored by cosine similarity (the mock's word vectors).
    by_meaning = await searched(client, user, [base_id], "garage", mode="vector")
    assert by_meaning[0]["text"] == PARKING
    assert len(by_meaning) == 4
    assert 0.0 < by_meaning[0]["score"] <= 1.0
    hybrid = await searched(client, user, [base_id], "garage")
    assert hybrid[0]["text"] == PARKING
    # Its cosine similarity plus the whole word lift: it is the best (the only) match of the query's words.
    assert abs(hybrid[0]["score"] - (by_meaning[0]["score"] + 0.15)) < 1e-6
    # A passage the words alone bring is scored by its meaning too, and lifted less than the best match.
    lifted = await searched(client, user, [base_id], "free garage morning")
    assert lifted[0]["text"] == PARKING
    assert {hit["text"] for hit in lifted[:2]} == {PARKING, OPENS}


async def test_filters_by_document_content_type_metadata_and_dates(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, office, holidays = await handbook(client, session_maker, tenant_a, key, user)
    office_texts, holiday_texts = sorted([OPENS, PARKING]), sorted([HOLIDAYS, SICK])

    async def found(**filters: Any) -> list[str]:
        return sorted(texts(await searched(client, user, [base_id], "office holidays", filters=filters)))

    assert await found(document_ids=[str(holidays)]) == holiday_texts
    assert await found(document_ids=[str(office), str(holidays)]) == sorted(office_texts + holiday_texts)
    assert await found(content_types=["text/markdown"]) == office_texts
    assert await found(metadata={"team": "hr"}) == holiday_texts
    # Exact values: a list matches the same list only, not a longer one containing it.
    assert await found(metadata={"tags": ["building"]}) == office_texts
    assert await found(metadata={"team": "hr", "tags": ["building"]}) == []
    assert await found(created_after="2025-01-01T00:00:00Z") == holiday_texts
    assert await found(created_before="2025-01-01T00:00:00Z") == office_texts
    assert await found(created_after="2023-01-01T00:00:00Z", created_before="2024-06-01T00:00:00Z") == office_texts


async def test_who_reaches_which_base(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key_a = await embedder(client, tenant_a, upstream, auth_headers)
    key_b = await embedder(client, tenant_b, upstream, auth_headers)
    user, admin = auth_headers(tenant_a.user), auth_headers(tenant_a.admin)
    own, _, _ = await handbook(client, session_maker, tenant_a, key_a, user)
    # The admin's private base: not the user's to search, and not confirmed to exist.
    private, _, _ = await handbook(client, session_maker, tenant_a, key_a, admin, name="Admin's")
    response = await client.post(SEARCH, json={"query": "office", "base_ids": [own, private]}, headers=user)
    assert response.status_code == 404
    assert private in response.text
    assert "base_ids" in response.text
    response = await client.post(f"{BASES}/{private}/search", json={"query": "office"}, headers=user)
    assert response.status_code == 404
    unknown = str(uuid7())
    response = await client.post(SEARCH, json={"query": "office", "base_ids": [unknown]}, headers=user)
    assert (response.status_code, unknown in response.text) == (404, True)

    # Tenant B's base with the same passages: out of A's reach by id, and never among A's results.
    other, _, _ = await handbook(client, session_maker, tenant_b, key_b, auth_headers(tenant_b.user))
    response = await client.post(SEARCH, json={"query": "office", "base_ids": [own, other]}, headers=user)
    assert response.status_code == 404
    a_admin_hits = await searched(client, admin, [own, private], "office", limit=50)
    async with tenant_session(session_maker, tenant_b.id) as session:
        b_chunks = {str(chunk_id) for chunk_id in await session.scalars(select(KnowledgeChunk.id))}
    assert b_chunks
    assert not {hit["chunk_id"] for hit in a_admin_hits} & b_chunks
    assert {hit["base_id"] for hit in a_admin_hits} == {own, private}

    # A group's base: its members search it, other users of the tenant do not reach it.
    group_base, _, _ = await handbook(
        client, session_maker, tenant_a, key_a, admin, name="Team", scope="group", group_id=str(tenant_a.group.id)
    )
    member = await add_user(session_maker, tenant_a, "member")
    outsider = await add_user(session_maker, tenant_a, "outsider")
    await join(session_maker, tenant_a, member)
    assert texts(await searched(client, auth_headers(member), [group_base], "garage", mode="text")) == [PARKING]
    response = await client.post(
        SEARCH, json={"query": "garage", "base_ids": [group_base]}, headers=auth_headers(outsider)
    )
    assert response.status_code == 404


async def test_rerank_puts_the_candidates_in_the_rerank_model_s_order(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "kb-ranker", models=["rerank-test"])
    user = auth_headers(tenant_a.user)
    base = await create_base(client, user)
    query = "green tea in the morning"
    passages = [
        "Green tea",
        "Tea in the morning",
        "The morning train leaves at seven",
        "After the long walk along the river with the dog and a chat with the neighbours over the fence, every"
        " morning ends in the kitchen with a pot of green tea",
        "My favourite colour is green",
    ]
    await add_document(client, session_maker, tenant_a, key, base["id"], "tea.txt", passages)

    plain = await searched(client, user, [base["id"]], query, mode="vector")
    reranked = await searched(client, user, [base["id"]], query, mode="vector", rerank=True, rerank_model="rerank-test")
    expected = sorted(passages, key=lambda text: -rerank_score(query, text))
    assert texts(reranked) == expected
    assert texts(plain) != expected
    assert [hit["score"] for hit in reranked] == [rerank_score(query, text) for text in expected]

    # Without a model named and none in the organization's memory settings: refused, naming the field.
    response = await client.post(SEARCH, json={"query": query, "base_ids": [base["id"]], "rerank": True}, headers=user)
    assert (response.status_code, "rerank_model" in response.text) == (400, True)
    # Billed to the searcher: the passages' embedding (the admin's key), the query's, the rerank.
    rows = await usage_rows(session_maker, tenant_a, 3)
    assert [(row.endpoint, row.user_id) for row in rows if row.endpoint == "rerank"] == [("rerank", tenant_a.user.id)]


async def test_diversity_leaves_out_near_copies(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base = await create_base(client, user)
    saturdays = "On Saturdays the office opens at ten, not at nine."
    visitors = "Visitors sign in at the office desk at nine."
    await add_document(client, session_maker, tenant_a, key, base["id"], "a.txt", [OPENS, saturdays])
    # The same paragraph again in another document.
    await add_document(client, session_maker, tenant_a, key, base["id"], "b.txt", [OPENS, visitors])
    query = "office opens at nine"

    plain = texts(await searched(client, user, [base["id"]], query, mode="vector", limit=3))
    assert plain.count(OPENS) == 2
    diverse = texts(await searched(client, user, [base["id"]], query, mode="vector", limit=3, diversity=True))
    assert sorted(diverse) == sorted([saturdays, OPENS, visitors])


async def test_documents_not_ready_are_not_searched(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)
    for status in ("queued", "running", "failed"):
        await add_document(
            client,
            session_maker,
            tenant_a,
            key,
            base_id,
            f"{status}.txt",
            [f"The zeppelin hangar is {status}."],
            status=status,
        )
    assert await searched(client, user, [base_id], "zeppelin hangar", mode="text") == []
    assert not any(
        "zeppelin" in text for text in texts(await searched(client, user, [base_id], "zeppelin hangar", limit=50))
    )


async def test_bad_input_is_refused_naming_the_field(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)
    other_model = await create_base(client, user, name="Other model", embedding_model="other-embedder")
    good = {"query": "office", "base_ids": [base_id]}
    refusals = [
        ({**good, "query": ""}, "query"),
        ({**good, "query": "x" * 2001}, "query"),
        ({**good, "query": 7}, "query"),
        ({**good, "base_ids": []}, "base_ids"),
        ({**good, "base_ids": ["not-an-id"]}, "base_ids"),
        ({**good, "base_ids": [base_id, other_model["id"]]}, "base_ids"),
        ({"query": "office"}, "base_ids"),
        ({**good, "limit": 0}, "limit"),
        ({**good, "limit": 51}, "limit"),
        ({**good, "limit": "many"}, "limit"),
        ({**good, "mode": "fuzzy"}, "mode"),
        ({**good, "rerank": "yes"}, "rerank"),
        ({**good, "rerank_model": "rerank-test"}, "rerank_model"),
        ({**good, "diversity": 1}, "diversity"),
        ({**good, "filters": {"document_ids": []}}, "document_ids"),
        ({**good, "filters": {"document_ids": ["nope"]}}, "document_ids"),
        ({**good, "filters": {"content_types": [""]}}, "content_types"),
        ({**good, "filters": {"metadata": {}}}, "metadata"),
        ({**good, "filters": {"metadata": "team"}}, "metadata"),
        ({**good, "filters": {"created_after": "yesterday"}}, "created_after"),
        ({**good, "filters": {"colour": "red"}}, "colour"),
        ({**good, "colour": "red"}, "colour"),
    ]
    for body, field in refusals:
        response = await client.post(SEARCH, json=body, headers=user)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)
    # Bases of different models can still be searched together by words.
    assert texts(await searched(client, user, [base_id, other_model["id"]], "garage", mode="text")) == [PARKING]


async def test_the_query_embedding_is_billed_to_the_searcher_once_and_a_refusal_is_passed_on(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)
    ingestion = len(await usage_rows(session_maker, tenant_a, 2))

    await searched(client, user, [base_id], "office hours")
    # The same query again within the minute: the cached vector, no second call.
    await searched(client, user, [base_id], "office hours")
    # Text mode embeds nothing.
    await searched(client, user, [base_id], "parking", mode="text")
    rows = await usage_rows(session_maker, tenant_a, ingestion + 1)
    searches = [row for row in rows if row.user_id == tenant_a.user.id]
    assert [(row.endpoint, row.model, row.outcome) for row in searches] == [("embeddings", EMBEDDER, "ok")]

    # The organization keeps the user's searches off the embedding model: the gateway's refusal, as is.
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == tenant_a.user.id, ApiToken.name == CHAT_TOKEN_NAME)
            .values(allowed_models=["gpt-test"])
        )
        await session.commit()
    response = await client.post(SEARCH, json={"query": "a new question", "base_ids": [base_id]}, headers=user)
    assert response.status_code == 403, response.text
    assert EMBEDDER in response.json()["detail"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(ApiToken).where(ApiToken.user_id == tenant_a.user.id).values(allowed_models=[]))
        await session.commit()

    upstream.behave(f"kb-embed-{tenant_a.slug}", status=500)
    response = await client.post(SEARCH, json={"query": "a new question", "base_ids": [base_id]}, headers=user)
    # The gateway's own status for a failing provider (a 5xx it chose, never an unhandled 500).
    assert response.status_code in {502, 503}, response.text
    assert response.json()["detail"]
    # A search by words needs no embedding and still works.
    assert texts(await searched(client, user, [base_id], "garage", mode="text")) == [PARKING]
