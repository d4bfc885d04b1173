"""Retrieval on a labelled set: 200 memories of 20 users per tenant, 100 queries with known answers.

The embeddings are the mock upstream's deterministic bag-of-words vectors (fetched over HTTP), so this
measures the search pipeline (vector ranking, full-text fusion, HNSW against exact, filters, isolation),
not the semantic quality of any real embedding model.
"""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.memory import services
from db.auth import User
from db.session import tenant_session
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows

DIMENSIONS = 256
MODEL = "embed-test"
USERS = 20
TOPICS = [
    (
        "Favourite food is {}",
        "which food does the user love {}",
        "sushi ramen paella lasagne tacos curry pho falafel risotto goulash kimchi borscht moussaka ceviche "
        "pierogi dumplings couscous burrito pancakes gnocchi",
    ),
    (
        "Works as a {}",
        "what is the user's job {}",
        "nurse pilot carpenter lawyer chemist plumber teacher architect baker farmer dentist journalist "
        "electrician librarian surgeon welder actuary florist geologist translator",
    ),
    (
        "Lives in {}",
        "which city is home {}",
        "Lyon Oslo Porto Kyoto Denver Quito Hanoi Dublin Krakow Tunis Perth Seville Leeds Tallinn Bergen Malmo "
        "Graz Turin Ghent Split",
    ),
    (
        "Plays the {} in a band",
        "which instrument {}",
        "violin cello trumpet banjo harp oboe tuba flute clarinet sitar ukulele bassoon mandolin accordion "
        "harmonica xylophone trombone bagpipes marimba saxophone",
    ),
    (
        "Drives a {} car",
        "what car {}",
        "Volvo Fiat Skoda Tesla Honda Mazda Subaru Lada Saab Opel Kia Dacia Seat Citroen Peugeot Renault Jeep "
        "Mini Lancia Alfa",
    ),
    (
        "Allergic to {}",
        "what allergy {}",
        "peanuts shellfish pollen latex penicillin wasps mould dust soy gluten sesame mustard celery lupin kiwi "
        "mango nickel feathers eggs milk",
    ),
    (
        "Supports {} at football",
        "which football team {}",
        "Arsenal Celtic Ajax Benfica Porto Napoli Lazio Sevilla Boca Santos Galatasaray Feyenoord Rangers Lille "
        "Monaco Basel Sparta Legia Dinamo Olympiacos",
    ),
    (
        "Reads novels by {}",
        "which author {}",
        "Tolstoy Austen Kafka Borges Woolf Camus Dickens Orwell Murakami Morrison Achebe Eco Calvino Nabokov "
        "Proust Joyce Hesse Zola Balzac Chekhov",
    ),
    (
        "Speaks {} fluently",
        "which language {}",
        "Finnish Basque Welsh Tagalog Swahili Icelandic Maltese Catalan Yoruba Quechua Amharic Khmer Lao "
        "Sinhala Tamil Gujarati Pashto Uzbek Mongolian Georgian",
    ),
    (
        "Has a pet {}",
        "what pet {}",
        "iguana ferret parrot tortoise hamster rabbit axolotl chinchilla gecko canary goldfish hedgehog "
        "tarantula cockatiel alpaca donkey goat pony lamb duck",
    ),
]


def labelled_set() -> tuple[dict[int, list[str]], list[tuple[int, str, str]]]:
    """Memories per user, and (user, query, the memory that answers it): 5 queries per user."""
    memories: dict[int, list[str]] = {}
    queries = []
    for user in range(USERS):
        memories[user] = []
        for index, (template, question, values) in enumerate(TOPICS):
            value = values.split()[(user * 7 + index) % USERS]
            memories[user].append(template.format(value))
            if (user + index) % 2 == 0:
                queries.append((user, question.format(value), template.format(value)))
    return memories, queries


async def embeddings(upstream: MockUpstream, texts: list[str]) -> list[list[float]]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{upstream.base_url('embeddings')}/embeddings", json={"model": MODEL, "input": texts}
        )
    return [item["embedding"] for item in response.json()["data"]]


async def load(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, upstream: MockUpstream
) -> dict[int, User]:
    memories, _ = labelled_set()
    users: dict[int, User] = {}
    async with tenant_session(session_maker, tenant.id) as session:
        for user_number, texts in memories.items():
            user = User(email=f"u{user_number}@{tenant.slug}.example.com", hashed_password=TEST_PASSWORD_HASH)
            session.add(user)
            await session.flush()
            users[user_number] = user
            for memory_text, vector in zip(texts, await embeddings(upstream, texts), strict=True):
                await services.add_memory(
                    session,
                    user_id=user.id,
                    text_value=memory_text,
                    embedding=services.Embedding(model=MODEL, vector=vector),
                    actor=services.MemoryAuthor(kind="user", user_id=user.id),
                )
        await session.commit()
    return users


async def recall_at_5(
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantRows,
    users: dict[int, User],
    upstream: MockUpstream,
    *,
    exact: bool,
) -> float:
    _, queries = labelled_set()
    vectors = await embeddings(upstream, [query for _, query, _ in queries])
    found = 0
    async with tenant_session(session_maker, tenant.id) as session:
        own = {
            number: {
                row[0]
                for row in await session.execute(
                    text("SELECT id FROM memory_user_memories WHERE user_id = :u"), {"u": user.id}
                )
            }
            for number, user in users.items()
        }
        for (user_number, query, answer), vector in zip(queries, vectors, strict=True):
            if not exact:
                # Make the planner take the HNSW index even at this size (it would sort 10 rows exactly).
                for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                    await session.execute(text(f"SET LOCAL {setting} = off"))
            hits = await services.search(
                session,
                user_id=users[user_number].id,
                query=query,
                embedding=services.Embedding(model=MODEL, vector=vector),
                limit=5,
                exact=exact,
            )
            # Never another user's memory, never another tenant's.
            assert {hit.memory.id for hit in hits} <= own[user_number]
            found += answer in [hit.memory.text for hit in hits]
            await session.rollback()
    return found / len(queries)


async def test_recall_at_5_with_hnsw_matches_exact_search_and_nothing_leaks(
    session_maker: async_sessionmaker[AsyncSession],
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
) -> None:
    upstream.behave("embeddings", dimensions=DIMENSIONS)
    users_a = await load(session_maker, tenant_a, upstream)
    await load(session_maker, tenant_b, upstream)  # the same texts in another tenant: must never surface
    _, queries = labelled_set()
    assert len(queries) == 100
    async with tenant_session(session_maker, tenant_a.id) as session:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await session.execute(text(f"SET LOCAL {setting} = off"))
        # The query shape `nearest` sends: the planner can serve it from the HNSW index of its size.
        plan = "\n".join(
            row[0]
            for row in await session.execute(
                text(
                    "EXPLAIN SELECT id FROM memory_user_memories WHERE user_id = :u AND status = 'active' "
                    "AND embedding_model = :m AND embedding_dim = 256 "
                    "ORDER BY embedding::vector(256) <=> CAST(:q AS vector(256)) LIMIT 20"
                ),
                {"u": users_a[0].id, "m": MODEL, "q": "[" + ",".join(["0.1"] * DIMENSIONS) + "]"},
            )
        )
        assert "idx_memory_user_memories_hnsw_256" in plan, plan
    approximate = await recall_at_5(session_maker, tenant_a, users_a, upstream, exact=False)
    exact = await recall_at_5(session_maker, tenant_a, users_a, upstream, exact=True)
    print(f"recall@5: HNSW {approximate:.2%}, exact {exact:.2%}")  # noqa: T201 - the figure the issue asks for
    assert exact >= 0.9
    assert abs(approximate - exact) <= 0.02
