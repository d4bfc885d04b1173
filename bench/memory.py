"""Memory search benchmark: hybrid search latency at 10k and 100k memories in one tenant among ten.

Run with `make bench`. The data is synthetic but shaped like real memories: 1536-dimension vectors (the size
of OpenAI's text-embedding-3-small) clustered around a thousand topics, short texts that share topic words,
and ten tenants in one table. Searches run as the app role through `app.memory.services.search` (RLS, the
hybrid vector + full-text query and the fusion), one transaction each, the query already embedded: the
embeddings call is the gateway's and is measured by `bench.gateway`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.embedded import EmbeddedPostgres
from app.memory import services
from db.bootstrap import bootstrap_database, plain_url
from db.migrations import upgrade_to_head
from db.session import create_engine, create_session_maker, tenant_session

DIMENSIONS = 1536
MODEL = "bench-embed"
TOPICS = 1000
MEMORIES_PER_USER = 100
HEAVY_USER_MEMORIES = 10_000
QUERIES = 200
WARM_UP_QUERIES = 40
LIMIT = 10
# What `search` asks the vector half for, to fuse with the full-text half.
CANDIDATES = max(LIMIT * services.CANDIDATES_PER_RESULT, services.MIN_CANDIDATES)
SEED = 20261122
# Noise norms relative to the unit topic centre: memories of one topic end up at cosine ~0.6 of each other,
# and a query at ~0.9 of the memory it is about, like paraphrases under a real embedding model.
MEMORY_NOISE = 0.8
QUERY_NOISE = 0.45


@dataclass
class TenantData:
    slug: str
    # (user id, memory count) per user.
    users: list[tuple[UUID, int]]
    id: UUID = field(default_factory=uuid7)
    texts: dict[UUID, list[str]] = field(default_factory=dict)
    vectors: dict[UUID, np.ndarray] = field(default_factory=dict)


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables, size=int(rng.integers(2, 4)))))
    return sorted(words)


def _unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


def _generate(tenants: list[TenantData], rng: np.random.Generator) -> None:
    vocabulary = np.array(_vocabulary(rng, 5000))
    topic_words = [list(rng.choice(vocabulary, size=3, replace=False)) for _ in range(TOPICS)]
    centres = _unit(rng.standard_normal((TOPICS, DIMENSIONS)))
    for tenant in tenants:
        for user_id, count in tenant.users:
            topics = rng.integers(0, TOPICS, size=count)
            noise = rng.standard_normal((count, DIMENSIONS)) * (MEMORY_NOISE / np.sqrt(DIMENSIONS))
            tenant.vectors[user_id] = _unit(centres[topics] + noise)
            tenant.texts[user_id] = [
                " ".join([*topic_words[topic], *rng.choice(vocabulary, size=5), f"n{index}"])
                for index, topic in enumerate(topics)
            ]


async def _load(superuser_url: str, database: str, tenant: TenantData) -> None:
    # COPY as the superuser (RLS does not apply to it): loading is setup here, searching is what is measured.
    connection = await asyncpg.connect(plain_url(superuser_url, database))
    try:
        await register_vector(connection)
        await connection.execute(
            "INSERT INTO tenant_organizations (id, slug, name) VALUES ($1, $2, $2)", tenant.id, tenant.slug
        )
        await connection.copy_records_to_table(
            "auth_users",
            columns=["id", "tenant_id", "email"],
            records=[
                (user_id, tenant.id, f"u{n}@{tenant.slug}.example.com") for n, (user_id, _) in enumerate(tenant.users)
            ],
        )
        for user_id, _ in tenant.users:
            await connection.copy_records_to_table(
                "memory_user_memories",
                columns=[
                    "id",
                    "tenant_id",
                    "user_id",
                    "memory_text",
                    "memory_hash",
                    "embedding",
                    "embedding_model",
                    "embedding_dim",
                ],
                records=[
                    (
                        uuid7(),
                        tenant.id,
                        user_id,
                        memory_text,
                        services.memory_hash(memory_text),
                        vector,
                        MODEL,
                        DIMENSIONS,
                    )
                    for memory_text, vector in zip(tenant.texts[user_id], tenant.vectors[user_id], strict=True)
                ],
            )
    finally:
        await connection.close()


@dataclass(frozen=True)
class Mode:
    name: str
    exact: bool = False
    # Without a sort to fall back on, the planner serves the vector half from the HNSW index.
    force_index: bool = False


MODES = (Mode("as planned"), Mode("HNSW forced", force_index=True), Mode("exact", exact=True))


async def _steer(session: AsyncSession, mode: Mode) -> None:
    if mode.force_index:
        await session.execute(text("SET LOCAL enable_sort = off"))


@dataclass
class Figures:
    latencies_ms: list[float] = field(default_factory=list)
    # The memory each query paraphrases, found in the top LIMIT.
    found: int = 0
    # Each query's top LIMIT, to compare with exact search's.
    top: list[set[UUID]] = field(default_factory=list)


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1]


async def _run_queries(
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantData,
    queries: list[tuple[UUID, str, list[float], str]],
    *,
    mode: Mode,
) -> Figures:
    figures = Figures()
    for number, (user_id, query, vector, answer) in enumerate(queries):
        started = time.perf_counter()
        async with tenant_session(session_maker, tenant.id) as session:
            await _steer(session, mode)
            hits = await services.search(
                session,
                user_id=user_id,
                query=query,
                embedding=services.Embedding(model=MODEL, vector=vector),
                limit=LIMIT,
                exact=mode.exact,
            )
        elapsed = (time.perf_counter() - started) * 1000
        if number >= WARM_UP_QUERIES:
            figures.latencies_ms.append(elapsed)
            figures.found += answer in [hit.memory.text for hit in hits]
            figures.top.append({hit.memory.id for hit in hits})
    return figures


async def _vector_overlap(
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantData,
    queries: list[tuple[UUID, str, list[float], str]],
    mode: Mode,
) -> float:
    """How many of the exact nearest neighbours the vector half of a search (as served) also returns."""
    shared = 0
    for user_id, _, vector, _ in queries[WARM_UP_QUERIES:]:
        embedding = services.Embedding(model=MODEL, vector=vector)
        results = []
        for exact in (False, True):
            async with tenant_session(session_maker, tenant.id) as session:
                await _steer(session, mode)
                rows = await services.nearest(
                    session, user_id=user_id, embedding=embedding, limit=CANDIDATES, exact=exact
                )
            results.append({memory_id for memory_id, _ in rows})
        shared += len(results[0] & results[1])
    return shared / (CANDIDATES * (len(queries) - WARM_UP_QUERIES))


async def _plan(session_maker: async_sessionmaker[AsyncSession], tenant: TenantData, user_id: UUID, mode: Mode) -> str:
    """The index PostgreSQL picks for the vector half of a search by this user."""
    async with tenant_session(session_maker, tenant.id) as session:
        await _steer(session, mode)
        await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        plan = "\n".join(
            row[0]
            for row in await session.execute(
                # DIMENSIONS is this module's constant, not input.
                text(
                    "EXPLAIN SELECT id FROM memory_user_memories WHERE user_id = :u AND status = 'active' "  # noqa: S608
                    f"AND embedding_model = :m AND embedding_dim = {DIMENSIONS} "
                    f"ORDER BY embedding::vector({DIMENSIONS}) <=> CAST(:q AS vector({DIMENSIONS})) LIMIT {CANDIDATES}"
                ),
                {"u": user_id, "m": MODEL, "q": "[" + ",".join(["0.01"] * DIMENSIONS) + "]"},
            )
        )
    return "HNSW index" if f"hnsw_{DIMENSIONS}" in plan else "per-user b-tree index, exact sort"


def _queries(
    tenant: TenantData, users: list[UUID], rng: np.random.Generator
) -> list[tuple[UUID, str, list[float], str]]:
    queries = []
    for _ in range(WARM_UP_QUERIES + QUERIES):
        user_id = users[int(rng.integers(0, len(users)))]
        index = int(rng.integers(0, len(tenant.texts[user_id])))
        answer = tenant.texts[user_id][index]
        words = answer.split()
        # Two of its topic words and one of its own, as a user would half-remember it.
        query = " ".join([*rng.choice(words[:3], size=2, replace=False), words[3 + int(rng.integers(0, 5))]])
        noise = rng.standard_normal(DIMENSIONS) * (QUERY_NOISE / np.sqrt(DIMENSIONS))
        vector = _unit(tenant.vectors[user_id][index] + noise)
        queries.append((user_id, query, [float(value) for value in vector], answer))
    return queries


async def _measure(superuser_url: str, app_url: str, database: str) -> list[str]:
    rng = np.random.default_rng(SEED)
    small = TenantData("ten-k", [(uuid7(), MEMORIES_PER_USER) for _ in range(10_000 // MEMORIES_PER_USER)])
    heavy_user = uuid7()
    large = TenantData(
        "hundred-k",
        [(uuid7(), MEMORIES_PER_USER) for _ in range((100_000 - HEAVY_USER_MEMORIES) // MEMORIES_PER_USER)]
        + [(heavy_user, HEAVY_USER_MEMORIES)],
    )
    others = [
        TenantData(f"other-{n}", [(uuid7(), MEMORIES_PER_USER) for _ in range(10_000 // MEMORIES_PER_USER)])
        for n in range(1, 9)
    ]
    tenants = [small, large, *others]
    _generate(tenants, rng)
    total = sum(count for tenant in tenants for _, count in tenant.users)

    index = f"idx_memory_user_memories_hnsw_{DIMENSIONS}"
    connection = await asyncpg.connect(plain_url(superuser_url, database))
    try:
        # Bulk loads build the index once afterwards (as a restore would), from the migration's own definition.
        definition = await connection.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", index)
        await connection.execute(f"DROP INDEX {index}")
        started = time.perf_counter()
        for batch in (tenants[i : i + 2] for i in range(0, len(tenants), 2)):
            await asyncio.gather(*(_load(superuser_url, database, tenant) for tenant in batch))
        loaded_in = time.perf_counter() - started
        started = time.perf_counter()
        await connection.execute("SET maintenance_work_mem = '4GB'")
        await connection.execute(definition)
        indexed_in = time.perf_counter() - started
        await connection.execute("ANALYZE memory_user_memories")
        shared_buffers = await connection.fetchval("SHOW shared_buffers")
        table_size = await connection.fetchval("SELECT pg_size_pretty(pg_table_size('memory_user_memories'))")
        index_size = await connection.fetchval("SELECT pg_size_pretty(pg_relation_size($1))", index)
    finally:
        await connection.close()

    engine = create_engine(app_url, pool_size=2)
    session_maker = create_session_maker(engine)
    lines = [
        f"{total} memories of {DIMENSIONS} dimensions in {len(tenants)} tenants: COPY {loaded_in:.0f} s, HNSW "
        f"build {indexed_in:.0f} s; table {table_size}, HNSW index {index_size}; shared_buffers {shared_buffers}",
        f"hybrid search, limit {LIMIT}, {QUERIES} queries per row after {WARM_UP_QUERIES} warm-up, one at a time:",
    ]
    scenarios = [
        ("10k tenant, users of 100 memories", small, [user_id for user_id, _ in small.users]),
        ("100k tenant, users of 100 memories", large, [user_id for user_id, _ in large.users[:-1]]),
        (f"100k tenant, one user of {HEAVY_USER_MEMORIES // 1000}k memories", large, [heavy_user]),
    ]
    try:
        for title, tenant, users in scenarios:
            queries = _queries(tenant, users, rng)
            plans = {}
            by_mode = {}
            for mode in MODES:
                plans[mode] = "exact scan" if mode.exact else await _plan(session_maker, tenant, users[0], mode)
                by_mode[mode] = await _run_queries(session_maker, tenant, queries, mode=mode)
            exact_top = next(figures.top for mode, figures in by_mode.items() if mode.exact)
            for mode, figures in by_mode.items():
                line = (
                    f"  {title}, {mode.name} [{plans[mode]}]: p50 {statistics.median(figures.latencies_ms):.1f} ms, "
                    f"p95 {_percentile(figures.latencies_ms, 95):.1f} ms; paraphrased memory in top {LIMIT}: "
                    f"{100 * figures.found / QUERIES:.0f}%"
                )
                if not mode.exact:
                    shared = sum(len(served & exact) for served, exact in zip(figures.top, exact_top, strict=True))
                    line += f"; recall@{LIMIT} against exact search: {shared / sum(map(len, exact_top)):.3f}"
                    overlap = await _vector_overlap(session_maker, tenant, queries, mode)
                    line += f"; vector candidates = exact nearest {CANDIDATES}: {100 * overlap:.1f}%"
                lines.append(line)
    finally:
        await engine.dispose()
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lyss-memory-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        superuser_url = postgres.start()
        try:
            database = "lyss_memory_bench"
            urls = asyncio.run(bootstrap_database(superuser_url, database))
            asyncio.run(upgrade_to_head(urls.owner_url))
            lines = asyncio.run(_measure(superuser_url, urls.app_url, database))
        finally:
            postgres.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
