"""How memory search ranks: meaning first, a bounded lift for the query's rare words, words in the
organization's language; and what a search costs (its query's vector is reused for a minute).

The ranking tests give each memory a vector at a chosen cosine similarity to the query's, so what they
check is the fusion itself, independent of any embedding model.
"""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.memory import services
from db.auth import User
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import usage_rows
from tests.support.memory import configure_memory
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows

DIMENSIONS = 256
MODEL = "embed-test"
QUERY_VECTOR = [1.0] + [0.0] * (DIMENSIONS - 1)
FAR_FILLERS = [(f"Unrelated fact {index} about an ordinary afternoon", 0.02) for index in range(20)]
FILLER_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]


def at_similarity(cosine: float, axis: int) -> list[float]:
    """A unit vector at exactly `cosine` to the query's, leaning towards its own `axis` (1..255)."""
    vector = [0.0] * DIMENSIONS
    vector[0] = cosine
    vector[axis] = math.sqrt(1.0 - cosine * cosine)
    return vector


async def user_with_memories(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, memories: list[tuple[str, float]]
) -> User:
    async with tenant_session(session_maker, tenant.id) as session:
        user = User(email=f"ranked-{len(memories)}@{tenant.slug}.example.com", hashed_password=TEST_PASSWORD_HASH)
        session.add(user)
        await session.flush()
        for axis, (memory_text, cosine) in enumerate(memories, start=1):
            await services.add_memory(
                session,
                user_id=user.id,
                text_value=memory_text,
                embedding=services.Embedding(model=MODEL, vector=at_similarity(cosine, axis)),
                actor=services.MemoryAuthor(kind="user", user_id=user.id),
            )
        await session.commit()
    return user


async def ranked(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, user: User, query: str, limit: int = 5
) -> list[str]:
    async with tenant_session(session_maker, tenant.id) as session:
        hits = await services.search(
            session,
            user_id=user.id,
            query=query,
            embedding=services.Embedding(model=MODEL, vector=QUERY_VECTOR),
            limit=limit,
            # The fusion is what is checked here, not how an approximate index finds these made-up vectors.
            exact=True,
        )
    return [hit.memory.text for hit in hits]


async def test_words_most_memories_share_cannot_push_out_what_the_vectors_found(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    # Every memory but the answer shares the person's name and "has" with the question; the answer shares
    # no word with it, and is by far the closest in meaning.
    user = await user_with_memories(
        session_maker,
        tenant_a,
        [("Pitched a tent beside Loch Lomond last August", 0.80)]
        + [(f"Priya has a hobby number {index}: collecting things", 0.60 - index / 100) for index in range(20)],
    )
    found = await ranked(session_maker, tenant_a, user, "Where has Priya gone camping?")
    assert found[0] == "Pitched a tent beside Loch Lomond last August"


async def test_a_rare_name_number_or_date_lifts_the_memory_that_has_it_above_near_misses(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    user = await user_with_memories(
        session_maker,
        tenant_a,
        [
            ("Marcus is her brother-in-law and lives in Leeds", 0.45),
            # Half a full lift below the closest memory in meaning: its rare year takes it past.
            ("Moved to Lisbon in 2019 for a new job", 0.55 - services.LEXICAL_WEIGHT / 2),
            # The lift is bounded: a memory this far from the question in meaning stays below the rest.
            ("Bought a bicycle in 2019", 0.10),
            ("Her sister works as a pharmacist", 0.52),
            ("Her cousin teaches chemistry", 0.55),
            ("Started a pottery class last spring", 0.50),
            ("Her neighbour plays the drums", 0.53),
        ]
        # The rest of what is remembered about her: rarity is counted among all of it.
        + [(f"Filler fact {word} about an ordinary day", 0.05) for word in FILLER_WORDS],
    )
    assert (await ranked(session_maker, tenant_a, user, "Who is Marcus?"))[0].startswith("Marcus")
    in_2019 = await ranked(session_maker, tenant_a, user, "What happened in 2019?", limit=10)
    assert in_2019[0].startswith("Moved to Lisbon")
    assert in_2019.index("Bought a bicycle in 2019") > in_2019.index("Her sister works as a pharmacist")
    # Without a shared rare word the order is the vectors' order.
    assert (await ranked(session_maker, tenant_a, user, "Tell me about her relatives", limit=3)) == [
        "Her cousin teaches chemistry",
        "Her neighbour plays the drums",
        "Her sister works as a pharmacist",
    ]


async def test_a_strong_word_match_left_out_by_its_score_takes_the_last_place_of_the_page(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    close = [(f"Close in meaning, number {word}", 0.9 - index / 100) for index, word in enumerate(FILLER_WORDS[:8])]
    user = await user_with_memories(
        session_maker, tenant_a, [*close, ("Marcus lent her a canoe in 2019", 0.05), *FAR_FILLERS]
    )
    # Eight places: the best seven by score, then the word match (a full lift leaves it at 0.20, far below
    # the eighth closest in meaning, which it displaces).
    page = await ranked(session_maker, tenant_a, user, "When did Marcus lend the canoe?", limit=8)
    assert page == [text for text, _ in close[:7]] + ["Marcus lent her a canoe in 2019"]
    # A short page keeps every place for meaning: nothing is reserved below four results.
    short = await ranked(session_maker, tenant_a, user, "When did Marcus lend the canoe?", limit=3)
    assert short == [text for text, _ in close[:3]]
    # Words the question does not make informative reserve nothing.
    plain = await ranked(session_maker, tenant_a, user, "Tell me something close in meaning", limit=8)
    assert "Marcus lent her a canoe in 2019" not in plain


async def test_scores_say_what_each_part_gave(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    user = await user_with_memories(
        session_maker, tenant_a, [("Marcus plays chess", 0.5), ("Plays the cello", 0.7), ("Bakes bread", 0.2)]
    )
    async with tenant_session(session_maker, tenant_a.id) as session:
        hits = await services.search(
            session,
            user_id=user.id,
            query="Marcus",
            embedding=services.Embedding(model=MODEL, vector=QUERY_VECTOR),
            limit=3,
        )
    by_text = {hit.memory.text: hit for hit in hits}
    assert by_text["Plays the cello"].score is not None
    assert abs(by_text["Plays the cello"].score - 0.7) < 1e-4
    assert by_text["Plays the cello"].lexical_score == 0
    marcus = by_text["Marcus plays chess"]
    # The one word of the query, in one memory of three: the rarest a word can be here, a full lift.
    assert abs(marcus.lexical_score - 1.0) < 1e-6
    assert marcus.score is not None
    assert abs(marcus.fused_score - (marcus.score + services.LEXICAL_WEIGHT)) < 1e-4
    assert [hit.fused_score for hit in hits] == sorted((hit.fused_score for hit in hits), reverse=True)


async def test_words_match_in_the_organizations_language_and_queries_of_any_characters_are_safe(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    # No embedding model: a search by words alone shows what the text search matches.
    settings = await client.get("/api/memories/settings", headers=admin)
    assert settings.json()["language"] == "english"
    stored = await client.post(
        "/api/memories", json={"text": "Went camping with the twins", "infer": False}, headers=user
    )
    assert stored.status_code == 201, stored.text

    async def found(query: str) -> list[str]:
        response = await client.post("/api/memories/search", json={"query": query}, headers=user)
        assert response.status_code == 200, response.text
        return [hit["memory"]["text"] for hit in response.json()]

    # English stemming: "camped" and "camping" are one word; "the", "where", "did" are stop words.
    assert "Went camping with the twins" in await found("where did they camp")
    assert await found("where did the") == []
    for hostile in ("it's & | ! ( ) :* \\ 'x' <-> <2> \"", "' OR 1=1 --", "\x00" * 0 + "%_*", "ü ß 中文 😀"):
        assert isinstance(await found(hostile), list)

    # Another language: the memories' words are taken again in it.
    changed = await client.put("/api/memories/settings", json={**settings.json(), "language": "simple"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert await found("where did they camp") == []
    assert "Went camping with the twins" in await found("camping")

    unknown = await client.put("/api/memories/settings", json={**settings.json(), "language": "klingon"}, headers=admin)
    assert unknown.status_code == 400
    assert "language" in unknown.json()["detail"]
    malformed = await client.put(
        "/api/memories/settings", json={**settings.json(), "language": "english; drop"}, headers=admin
    )
    assert malformed.status_code == 400
    assert [problem["key"] for problem in malformed.json()["extra"]] == ["language"]


async def test_a_repeated_search_embeds_its_query_once_and_only_for_the_same_person(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    before = upstream.calls["mem-embed"]
    for _ in range(3):
        response = await client.post("/api/memories/search", json={"query": "favourite tea"}, headers=user)
        assert response.status_code == 200, response.text
    assert upstream.calls["mem-embed"] == before + 1
    # The admin's search of the same words is embedded (and billed) on the admin's own key.
    response = await client.post("/api/memories/search", json={"query": "favourite tea"}, headers=admin)
    assert response.status_code == 200, response.text
    assert upstream.calls["mem-embed"] == before + 2
    rows = await usage_rows(session_maker, tenant_a, 2)
    embedded = [row for row in rows if row.endpoint == "embeddings"]
    assert sorted(str(row.user_id) for row in embedded) == sorted([str(tenant_a.user.id), str(tenant_a.admin.id)])
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(UsageLog)) == 2


async def test_an_embedding_model_answering_another_size_is_named_not_silently_matching_nothing(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    stored = await client.post("/api/memories", json={"text": "Keeps bees in the garden", "infer": False}, headers=user)
    assert stored.status_code == 201, stored.text
    # The provider behind the model changes: now 128 dimensions where the memories have 256.
    upstream.behave("mem-embed", dimensions=128)
    refused = await client.post("/api/memories/search", json={"query": "bees"}, headers=user)
    assert refused.status_code == 409
    assert "returned 128 dimensions" in refused.json()["detail"]
    assert "have 256" in refused.json()["detail"]
    # The memories page still finds by words, and says why not by meaning.
    await sign_in(client, tenant_a, tenant_a.user.email)
    page = (await client.get("/portal/memories", params={"q": "bees"})).text
    assert "Matched by words only" in page
    assert "returned 128 dimensions" in page
    assert "Keeps bees in the garden" in page
