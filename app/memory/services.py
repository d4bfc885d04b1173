"""Memories: store, deduplicate, search (pgvector + full text, fused), change with history, link, erase.

Every function works in the caller's tenant session (RLS) and takes the user explicitly: a memory is
only ever read or changed together with its `user_id`, so one user's memories never reach another's.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from pgvector.sqlalchemy import HALFVEC, Vector
from saq.queue.redis import RedisQueue
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH, REGCONFIG, TSQUERY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidRequest, NotAllowed, NotFound, ServiceError
from app.gateway.client import cache_query_vector, cached_query_vector, chat_token, embed, rerank
from app.gateway.engine import Gateway
from app.jobs.services import submit_job
from app.memory.schemas import (
    DEFAULT_LANGUAGE,
    BatchItem,
    HistoryRead,
    MemoryFilters,
    MemoryHit,
    MemoryRead,
    MemorySettings,
    MemoryUpdate,
    range_bound,
)
from app.schemas import read_as
from app.settings import Settings
from app.tenants.plans import require_feature
from app.tenants.services import record_audit_event
from db.auth import User
from db.memory import HALFVEC_INDEXED_DIMENSIONS, INDEXED_DIMENSIONS, Memory, MemoryAssociation, MemoryHistory
from db.tenant import Job, Organization

# How far sharing the query's rare words lifts a memory, on the scale of cosine similarity: a memory with
# all of them climbs past near misses of meaning, never past a memory far closer in meaning.
LEXICAL_WEIGHT = 0.15
# Of each page of results, up to this many places (a quarter of the page at most) go to the best matches by
# words that have at least RESERVE_AT of the query's informative words, if the score left them out: a
# memory with the question's rare name and date is shown, after those closer in meaning.
RESERVED_FOR_WORDS = 2
RESERVE_AT = 0.5
# A word a tenth of the memories searched have (at least MIN_, at most this many) tells nothing about which
# memory is meant: it lifts none.
COMMON_WORD_COUNT = 500
MIN_COMMON_WORD_COUNT = 10
# Each ranking contributes this many candidates per requested result before fusion.
CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 20
# A batch links only its first memories to similar ones: each link is a nearest-neighbour query (measured in
# tests/integration/memory/test_memory_controls.py, see docs/architecture.md).
BATCH_LINKED = 100


Selected = TypeVar("Selected", bound=Select[*tuple[Any, ...]])


class DimensionConflict(Conflict):
    """An embedding whose size differs from the stored vectors of the same model."""


class MemoryAuthor(msgspec.Struct, frozen=True):
    """Who changes a memory, for its history."""

    kind: str  # "user", "admin" or "job"
    user_id: UUID | None = None
    job_id: UUID | None = None
    source_message_id: UUID | None = None


class Embedding(msgspec.Struct, frozen=True):
    model: str
    vector: list[float]


def archive_name(job_id: UUID) -> str:
    """The object name of a `memory.export` archive, in its tenant's space of the object store."""
    return f"exports/memories-{job_id}.json"


def normalize(text_value: str) -> str:
    return " ".join(text_value.split())


def memory_hash(text_value: str) -> str:
    """Two texts that differ only in spacing or case are the same memory."""
    return hashlib.sha256(normalize(text_value).casefold().encode()).hexdigest()


def memory_read(memory: Memory) -> MemoryRead:
    return read_as(
        MemoryRead,
        memory,
        text=memory.memory_text,
        importance=memory.importance_score,
        metadata=dict(memory.attributes),
    )


def history_read(row: MemoryHistory) -> HistoryRead:
    return read_as(HistoryRead, row)


# --- settings ------------------------------------------------------------------------------------


async def memory_settings(session: AsyncSession) -> MemorySettings:
    stored = await session.scalar(select(Organization.settings["memory"]))
    return msgspec.convert(stored or {}, MemorySettings)


async def save_memory_settings(session: AsyncSession, data: MemorySettings) -> MemorySettings:
    organization = await session.scalar(select(Organization).with_for_update())
    if organization is None:
        raise NotFound("No such organization.")
    organization.settings = {**organization.settings, "memory": msgspec.to_builtins(data)}
    await session.flush()
    return data


async def text_search_languages(session: AsyncSession) -> list[str]:
    """The languages PostgreSQL can match words in (its built-in text-search configurations)."""
    return list(
        await session.scalars(
            text("SELECT cfgname FROM pg_ts_config WHERE cfgnamespace = 'pg_catalog'::regnamespace ORDER BY cfgname")
        )
    )


async def _relanguage(session: AsyncSession, language: str) -> None:
    """Match the organization's memories by words in `language` from now on (their tsvectors are recomputed)."""
    languages = await text_search_languages(session)
    if language not in languages:
        raise InvalidRequest(
            f"The memory language '{language}' is not one words can be matched in; choose one of: "
            f"{', '.join(languages)}.",
            field="language",
        )
    await session.execute(update(Memory).values(language=cast(literal(language), REGCONFIG)))


async def change_memory_settings(
    session: AsyncSession,
    queue: RedisQueue,
    settings: Settings,
    *,
    tenant_id: UUID,
    actor_user_id: UUID,
    data: MemorySettings,
) -> tuple[MemorySettings, Job | None]:
    """Save the settings with an audit event and commit; returns them and the `memory.reembed` job, if one started.

    A new embedding model with memories stored under another one starts that job: vectors of different models
    are never compared, so until it has run those memories are found by their words only.
    """
    if data.enabled:
        await require_feature(session, "memory", label="memory", field="enabled")
    previous = await memory_settings(session)
    if data.language != previous.language:
        await _relanguage(session, data.language)
    saved = await save_memory_settings(session, data)
    record_audit_event(
        session,
        actor=str(actor_user_id),
        actor_user_id=actor_user_id,
        action="memory.settings_changed",
        target_type="organization",
        target_id=tenant_id,
        details={
            "llm_model": data.llm_model,
            "embedding_model": data.embedding_model,
            "rerank_model": data.rerank_model,
            "enabled": data.enabled,
        },
    )
    model = saved.embedding_model
    if (
        model is not None
        and model != previous.embedding_model
        and await session.scalar(stale_memories(model).exists().select())
    ):
        # Submitting commits the settings too.
        job, _ = await submit_job(
            session, queue, settings, tenant_id=tenant_id, kind="memory.reembed", created_by=actor_user_id
        )
        return saved, job
    await session.commit()
    return saved, None


# --- reading -------------------------------------------------------------------------------------


async def memory_owner(session: AsyncSession, *, caller_id: UUID, is_admin: bool, requested: UUID | None) -> UUID:
    """Whose memories: the caller's own, or (admins only) another user's of the tenant."""
    if requested is None or requested == caller_id:
        return caller_id
    if not is_admin:
        raise NotAllowed("You can only see and manage your own memories.")
    if await session.get(User, requested) is None:
        raise NotFound("No such user in this organization.")
    return requested


async def visible_memory(
    session: AsyncSession, memory_id: UUID, *, user_id: UUID, is_admin: bool, for_change: bool = False
) -> Memory:
    """A memory the caller may see (their own; any of the tenant for an admin) or change (their own only)."""
    memory = await session.get(Memory, memory_id)
    may = memory is not None and (memory.user_id == user_id or (is_admin and not for_change))
    if memory is None or not may:
        raise NotFound("No such memory.")
    return memory


async def list_memories(
    session: AsyncSession,
    *,
    user_id: UUID,
    include_invalidated: bool,
    filters: MemoryFilters,
    limit: int,
    before: datetime.datetime | None,
    before_id: UUID | None = None,
) -> list[Memory]:
    """Newest first; with `before` (and `before_id`, the last row's id) the page after that row."""
    statement = _filtered(select(Memory).where(Memory.user_id == user_id), filters)
    if not include_invalidated:
        statement = statement.where(Memory.status == "active")
    if before is not None and before_id is not None:
        statement = statement.where(Memory.created_at <= before, or_(Memory.created_at < before, Memory.id < before_id))
    elif before is not None:
        statement = statement.where(Memory.created_at < before)
    return list(await session.scalars(statement.order_by(Memory.created_at.desc(), Memory.id.desc()).limit(limit)))


async def memory_history(session: AsyncSession, memory: Memory) -> list[MemoryHistory]:
    return list(
        await session.scalars(
            select(MemoryHistory)
            .where(MemoryHistory.memory_id == memory.id)
            .order_by(MemoryHistory.created_at, MemoryHistory.id)
        )
    )


def stale_memories(embedding_model: str) -> Select[Memory]:
    """Active memories without a vector of `embedding_model`: what `memory.reembed` embeds again."""
    return select(Memory).where(
        Memory.status == "active",
        Memory.embedding_model.is_(None) | (Memory.embedding_model != embedding_model),
    )


async def find_duplicate(session: AsyncSession, user_id: UUID, text_value: str) -> Memory | None:
    """The user's active, unexpired memory that says the same."""
    return await session.scalar(
        select(Memory).where(
            Memory.user_id == user_id,
            Memory.memory_hash == memory_hash(text_value),
            Memory.status == "active",
            not_expired(),
        )
    )


async def forget_expired(session: AsyncSession, user_id: UUID, hashes: list[str]) -> None:
    """Delete now (not at the next prune) expired memories that would block these facts coming back."""
    await session.execute(
        delete(Memory).where(
            Memory.user_id == user_id,
            Memory.memory_hash.in_(hashes),
            Memory.status == "active",
            Memory.expires_at <= func.now(),
        )
    )


def check_expiry(expires_at: datetime.datetime | None, *, field: str = "expires_at") -> None:
    if expires_at is not None and expires_at <= datetime.datetime.now(datetime.UTC):
        raise InvalidRequest(f"`{field}` must be in the future.", field=field)


async def prune_expired(session: AsyncSession) -> int:
    """Delete the tenant's expired memories, with their history and associations; how many went."""
    result = await session.execute(delete(Memory).where(Memory.expires_at <= func.now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def check_dimension(session: AsyncSession, embedding: Embedding, *, doing: str = "stored") -> None:
    """A model's vectors all have one size: a differently sized answer would make the memories unsearchable."""
    stored = await session.scalar(
        select(Memory.embedding_dim).where(Memory.embedding_model == embedding.model).limit(1)
    )
    if stored is not None and stored != len(embedding.vector):
        outcome = "nothing was stored" if doing == "stored" else "its vector cannot be compared with theirs"
        raise DimensionConflict(
            f"The embedding model '{embedding.model}' returned {len(embedding.vector)} dimensions, but this "
            f"organization's memories embedded with it have {stored}; {outcome}."
        )


# --- search --------------------------------------------------------------------------------------


async def query_embedding(
    session: AsyncSession, gateway: Gateway, user_id: UUID, settings: MemorySettings, text_value: str
) -> Embedding | None:
    """The text's vector with the tenant's embedding model, billed to the user's chat key; None without a model."""
    if settings.embedding_model is None:
        return None
    token = await chat_token(session, user_id)
    await session.commit()
    vector = (await embed(gateway, token, settings.embedding_model, [text_value]))[0]
    return Embedding(model=settings.embedding_model, vector=vector)


async def search_embedding(
    session: AsyncSession,
    gateway: Gateway,
    *,
    tenant_id: UUID,
    user_id: UUID,
    settings: MemorySettings,
    text_value: str,
) -> Embedding | None:
    """`query_embedding` for a search: a text this user searched for in the last minute is not embedded again."""
    model = settings.embedding_model
    if model is None:
        return None
    vector = cached_query_vector(gateway, tenant_id, user_id, model, text_value)
    if vector is not None:
        return Embedding(model=model, vector=vector)
    embedding = await query_embedding(session, gateway, user_id, settings, text_value)
    assert embedding is not None
    # A misconfigured model (another size than the memories it embedded) would silently match nothing.
    await check_dimension(session, embedding, doing="searched")
    cache_query_vector(gateway, tenant_id, user_id, model, text_value, embedding.vector)
    return embedding


class Found(msgspec.Struct):
    hits: list[MemoryHit]
    # What the search could not do, for the caller to say: meaning or reranking left out, and why.
    notices: list[str]


async def find_memories(
    session: AsyncSession,
    gateway: Gateway,
    *,
    tenant_id: UUID,
    author_id: UUID,
    owner: UUID,
    query: str,
    limit: int,
    filters: MemoryFilters | None = None,
    settings: MemorySettings | None = None,
    words_if_embedding_fails: bool = False,
) -> Found:
    """Search `owner`'s memories for the author (whose chat key pays for the query's embedding and reranking).

    With `words_if_embedding_fails`, an embedding model that refuses or fails leaves a search by words (and
    a notice saying so) instead of an error: chat and the portal keep working while a provider is down.
    With a rerank model, the search's best `rerank_candidates` are put in that model's order before the
    first `limit` are kept; a rerank that fails leaves the search's own order, with a notice, never an error.
    """
    settings = settings or await memory_settings(session)
    notices: list[str] = []
    try:
        embedding = await search_embedding(
            session, gateway, tenant_id=tenant_id, user_id=author_id, settings=settings, text_value=query
        )
    except ServiceError as refusal:
        if not words_if_embedding_fails:
            raise
        notices.append(f"Matched by words only: the embedding model failed ({refusal.detail})")
        embedding = None
    hits = await search(
        session,
        user_id=owner,
        query=query,
        embedding=embedding,
        limit=max(limit, settings.rerank_candidates) if settings.rerank_model else limit,
        filters=filters,
        language=settings.language,
    )
    if settings.rerank_model is not None and hits:
        try:
            hits = await _reranked(session, gateway, author_id, settings.rerank_model, query, hits)
        except ServiceError as refusal:
            notices.append(f"Not reranked: {refusal.detail}")
    return Found(hits=hits[:limit], notices=notices)


async def _reranked(
    session: AsyncSession, gateway: Gateway, user_id: UUID, model: str, query: str, hits: list[MemoryHit]
) -> list[MemoryHit]:
    """`hits` in the rerank model's order, billed to the user's chat key; those it leaves unranked follow
    in the search's order."""
    token = await chat_token(session, user_id)
    await session.commit()
    ranking = await rerank(gateway, token, model, query, [hit.memory.text for hit in hits])
    # The gateway has checked the ranking: indices in range, none twice.
    ranked = [msgspec.structs.replace(hits[index], rerank_score=score) for index, score in ranking]
    named = {index for index, _ in ranking}
    return ranked + [hit for index, hit in enumerate(hits) if index not in named]


def not_expired() -> ColumnElement[bool]:
    """A memory past its `expires_at` is forgotten at once, before `memory.prune` deletes it."""
    return or_(Memory.expires_at.is_(None), Memory.expires_at > func.now())


def _filtered(statement: Selected, filters: MemoryFilters | None) -> Selected:
    """The one place the conditions of a search or a listing are added: expiry always, then `filters`."""
    statement = statement.where(not_expired())
    if filters is None:
        return statement
    if filters.memory_type is not None:
        statement = statement.where(Memory.memory_type == filters.memory_type)
    if filters.category is not None:
        statement = statement.where(Memory.category == filters.category)
    if filters.categories is not None:
        statement = statement.where(Memory.category.in_(filters.categories))
    if filters.agent_id is not None:
        statement = statement.where(Memory.agent_id == filters.agent_id)
    if filters.run_id is not None:
        statement = statement.where(Memory.run_id == filters.run_id)
    if filters.created_after is not None:
        statement = statement.where(Memory.created_at > filters.created_after)
    if filters.created_before is not None:
        statement = statement.where(Memory.created_at < filters.created_before)
    for key, condition in (filters.metadata or {}).items():
        if isinstance(condition, dict):
            statement = statement.where(*(_metadata_condition(key, op, value) for op, value in condition.items()))
        else:
            statement = statement.where(Memory.attributes.contains({key: condition}))
    return statement


_JSONPATH_COMPARISON = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _metadata_condition(key: str, operator: str, value: Any) -> ColumnElement[bool]:
    """One checked condition (`MemoryFilters` validated the key, operator and value) on one metadata key."""
    if operator == "eq":
        return Memory.attributes.contains({key: value})
    if operator == "ne":
        return ~Memory.attributes.contains({key: value})
    if operator in ("in", "nin"):
        matched = or_(*(Memory.attributes.contains({key: item}) for item in value))
        return matched if operator == "in" else ~matched
    bound = range_bound(value)
    comparison = _JSONPATH_COMPARISON[operator]
    # A JSON path with the bound as a variable: a value of another type (a word where a number is expected,
    # a string that is no date) compares as unknown, so the row does not match and nothing raises. The key
    # is a checked identifier; the _tz form compares a date with a date-time (in UTC, the session's zone).
    if isinstance(bound, datetime.datetime):
        path = f'$."{key}" ? (@.type() == "string" && @.datetime() {comparison} $bound.datetime())'
        variables: dict[str, Any] = {"bound": bound.isoformat()}
    else:
        path = f'$."{key}" ? (@.type() == "number" && @ {comparison} $bound)'
        variables = {"bound": bound}
    return func.jsonb_path_exists_tz(Memory.attributes, cast(path, JSONPATH), cast(variables, JSONB), True)


def _distance(query_vector: Any, dimension: int, *, exact: bool) -> Any:
    """Cosine distance to the query, written so that the HNSW index of this size can serve it."""
    if not exact and dimension in INDEXED_DIMENSIONS:
        return cast(Memory.embedding, Vector(dimension)).cosine_distance(query_vector)
    if not exact and dimension in HALFVEC_INDEXED_DIMENSIONS:
        return cast(Memory.embedding, HALFVEC(dimension)).cosine_distance(query_vector)
    return Memory.embedding.cosine_distance(query_vector)


async def _tune_for_search(session: AsyncSession, limit: int) -> None:
    await session.execute(_tuning(), {"ef_search": str(max(40, 2 * limit))})


@functools.cache
def _tuning() -> Select[*tuple[Any, ...]]:
    return select(
        # The best plan depends on the user (a hundred memories: b-tree and sort; tens of thousands: the
        # HNSW index) and on the query's words; a cached generic plan would also evaluate the tsquery
        # expression once per row. Measured in bench/memory.py.
        func.set_config("plan_cache_mode", "force_custom_plan", True),
        # pgvector filters after the index scan; iterative scanning keeps going until enough rows pass
        # the tenant, user and status filters (without it a small user in a big tenant gets too few).
        func.set_config("hnsw.iterative_scan", "relaxed_order", True),
        func.set_config("hnsw.ef_search", bindparam("ef_search", type_=Text), True),
    )


async def nearest(
    session: AsyncSession,
    *,
    user_id: UUID,
    embedding: Embedding,
    limit: int,
    filters: MemoryFilters | None = None,
    exact: bool = False,
) -> list[tuple[UUID, float]]:
    """The user's active memories closest to `embedding` (same model): (id, cosine similarity), best first."""
    dimension = len(embedding.vector)
    # Filtered: exact, for the reason `search` gives.
    exact = exact or (filters is not None and filters != MemoryFilters())
    distance = _distance(embedding.vector, dimension, exact=exact)
    await _tune_for_search(session, limit)
    statement = _filtered(
        select(Memory.id, distance.label("distance")).where(
            Memory.user_id == user_id,
            Memory.status == "active",
            Memory.embedding_model == embedding.model,
            Memory.embedding_dim == dimension,
        ),
        filters,
    )
    rows = (await session.execute(statement.order_by(distance).limit(limit))).all()
    # relaxed_order may return a slightly unordered list: order it exactly here.
    return sorted(((row.id, 1.0 - float(row.distance)) for row in rows), key=lambda item: -item[1])


def _lexical(user_id: Any, query: Any, language: Any, filters: MemoryFilters | None) -> Any:
    """The lexical leg: a CTE of (id, score 0..1) for each memory searched that has an informative word.

    The query's words are taken in the organization's language (stemmed, stop words out). A word is
    informative when few of the memories searched (the user's active ones that pass the filters) have it:
    its weight goes from 1 (one memory has it) down to 0 (a tenth of them or more do: the person's own name,
    "work", "like"); BM25's inverse document frequency, rescaled between those two points. A memory's
    score is the sum of the weights of the words it has, divided by the number of informative words: all of
    them, all rare, is 1.

    Under RLS the text match cannot use the GIN index (`@@` is not leakproof, so PostgreSQL checks the
    policy first): the user's rows are read once, each matched against all the words at once, and only those
    with one of them against each word, rather than every row once per word.
    """
    words = (
        func.unnest(func.tsvector_to_array(func.to_tsvector(cast(language, REGCONFIG), query)))
        .table_valued("lexeme", with_ordinality="position")
        .render_derived()
    )
    term = cast(func.quote_literal(words.c.lexeme), TSQUERY)
    # MATERIALIZED here and below: computed once, not again wherever a later part names its columns.
    query_words = (
        select(words.c.position, words.c.lexeme, term.label("term")).cte("query_words").prefix_with("MATERIALIZED")
    )
    own = (Memory.user_id == user_id, Memory.status == "active")
    any_word = select(cast(func.string_agg(func.quote_literal(query_words.c.lexeme), " | "), TSQUERY)).scalar_subquery()
    # One pass over the user's rows: how many there are, and which have at least one of the words (each row
    # matched once against all of them together); then only those are matched against each word.
    scan = (
        _filtered(
            select(
                func.count().label("n"),
                func.array_agg(Memory.id).filter(Memory.search_vector.op("@@")(any_word)).label("ids"),
            ).where(*own),
            filters,
        )
        .cte("scan")
        .prefix_with("MATERIALIZED")
    )
    having_any = select(Memory.id, Memory.search_vector).where(Memory.id == func.any(scan.c.ids)).cte("having_any")
    matches = (
        select(having_any.c.id, query_words.c.position)
        .join(query_words, having_any.c.search_vector.op("@@")(query_words.c.term))
        .cte("matches")
        .prefix_with("MATERIALIZED")
    )
    n, df = scan.c.n, func.count()
    common = func.least(func.greatest(n / 10.0, MIN_COMMON_WORD_COUNT), COMMON_WORD_COUNT)

    def idf(count: Any) -> Any:
        return func.ln(1.0 + (n - count + 0.5) / (count + 0.5))

    weighted = (
        select(matches.c.position, ((idf(df) - idf(common)) / func.nullif(idf(1) - idf(common), 0)).label("weight"))
        .select_from(matches)
        .join(scan, literal(True))
        .group_by(matches.c.position, n)
        .having(df < common)
        .cte("weighted")
        .prefix_with("MATERIALIZED")
    )
    informative = select(func.count()).select_from(weighted).scalar_subquery()
    return (
        select(matches.c.id, (func.sum(weighted.c.weight) / informative).label("score"))
        .join(weighted, weighted.c.position == matches.c.position)
        .group_by(matches.c.id)
        .cte("lexical_scores")
    )


async def search(
    session: AsyncSession,
    *,
    user_id: UUID,
    query: str,
    embedding: Embedding | None,
    limit: int,
    filters: MemoryFilters | None = None,
    language: str = DEFAULT_LANGUAGE,
    exact: bool = False,
) -> list[MemoryHit]:
    """Hybrid search in one statement: the nearest memories by meaning and the best by rare shared words,
    each scored by its cosine similarity plus a bounded lexical lift; best first.

    The lift is `LEXICAL_WEIGHT` times the memory's lexical score (`_lexical`, 0 to 1): a memory with the
    query's rare words (a name, a number, a date) climbs past near misses of meaning, and one sharing only
    common words gains nothing, so it cannot push out what the vectors found. The last places of a page
    (`RESERVED_FOR_WORDS`) go to strong word matches the score left out, below everything else.
    """
    candidates = max(limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
    await _tune_for_search(session, candidates)
    dimension = None if embedding is None else len(embedding.vector)
    filtered = filters is not None and filters != MemoryFilters()
    # A filter is applied after an HNSW scan, not in it: a selective one (metadata, dates, an agent) could
    # exhaust the iterative scan's bound before the few rows that pass it are reached, and the vector leg
    # would come back short or empty. The user's memories are read exactly instead, through the user's index.
    statement = (
        _build_search_statement(dimension, exact or filtered, filters)
        if filtered
        else _search_statement(dimension, exact)
    )
    parameters: dict[str, Any] = {
        "user_id": user_id,
        "query": query,
        "language": language,
        "candidates": candidates,
        "limit": limit,
        "reserved": min(RESERVED_FOR_WORDS, limit // 4),
    }
    if embedding is not None:
        parameters |= {"model": embedding.model, "query_vector": embedding.vector}
    rows = (await session.execute(statement, parameters)).all()
    return [
        MemoryHit(
            memory=memory_read(row.Memory),
            score=None if row.similarity is None else float(row.similarity),
            lexical_score=float(row.lexical),
            fused_score=float(row.score),
        )
        for row in rows
    ]


@functools.lru_cache(maxsize=64)
def _search_statement(dimension: int | None, exact: bool) -> Select[*tuple[Any, ...]]:
    """The unfiltered search's statement, built once per vector size: building it costs more than running it
    for a user of a few hundred memories."""
    return _build_search_statement(dimension, exact, None)


def _build_search_statement(
    dimension: int | None, exact: bool, filters: MemoryFilters | None
) -> Select[*tuple[Any, ...]]:
    """`search`'s statement, its values as bound parameters (user_id, query, language, candidates, limit; with
    a vector size: model and query_vector)."""
    user_id = bindparam("user_id", type_=PG_UUID(as_uuid=True))
    candidates = bindparam("candidates", type_=Integer)
    lexical = _lexical(user_id, bindparam("query", type_=Text), bindparam("language", type_=Text), filters)
    best_by_words = select(lexical.c.id).order_by(lexical.c.score.desc(), lexical.c.id).limit(candidates)
    legs: list[Select[*tuple[Any, ...]]] = [best_by_words]
    similarity: Any = cast(null(), Float)
    if dimension is not None:
        query_vector = bindparam("query_vector", type_=Vector(dimension))
        model = bindparam("model", type_=Text)
        distance = _distance(query_vector, dimension, exact=exact)
        comparable = (Memory.embedding_model == model) & (Memory.embedding_dim == dimension)
        nearest_ids = (
            _filtered(
                select(Memory.id).where(Memory.user_id == user_id, Memory.status == "active", comparable), filters
            )
            .order_by(distance)
            .limit(candidates)
        )
        legs.append(nearest_ids)
        similarity = case((comparable, 1.0 - Memory.embedding.cosine_distance(query_vector)), else_=None)
    found = union(*legs).cte("found")
    lexical_part = func.coalesce(lexical.c.score, 0.0)
    score = func.coalesce(similarity, 0.0) + LEXICAL_WEIGHT * lexical_part
    scored = (
        select(
            found.c.id,
            similarity.label("similarity"),
            lexical_part.label("lexical"),
            score.label("score"),
            func.row_number().over(order_by=(lexical_part.desc(), score.desc(), found.c.id)).label("word_rank"),
        )
        .join(Memory, found.c.id == Memory.id)
        .outerjoin(lexical, lexical.c.id == Memory.id)
        .cte("scored")
    )
    # The best matches by words, if strong, take the last places even when their meaning ranks them lower.
    reserved = (scored.c.word_rank <= bindparam("reserved", type_=Integer)) & (scored.c.lexical >= RESERVE_AT)
    chosen = (
        select(scored)
        .order_by(reserved.desc(), scored.c.score.desc(), scored.c.id)
        .limit(bindparam("limit", type_=Integer))
        .cte("chosen")
    )
    return (
        select(Memory, chosen.c.similarity, chosen.c.lexical, chosen.c.score)
        .join(chosen, chosen.c.id == Memory.id)
        .order_by(chosen.c.score.desc(), Memory.id)
    )


# --- changing ------------------------------------------------------------------------------------


def _history(
    memory: Memory, event: str, actor: MemoryAuthor, *, old: str | None, new: str | None, reason: str | None
) -> MemoryHistory:
    return MemoryHistory(
        tenant_id=memory.tenant_id,
        memory_id=memory.id,
        event=event,
        old_text=old,
        new_text=new,
        reason=reason,
        actor=actor.kind,
        actor_user_id=actor.user_id,
        job_id=actor.job_id,
        source_message_id=actor.source_message_id,
    )


async def add_memory(
    session: AsyncSession,
    *,
    user_id: UUID,
    text_value: str,
    embedding: Embedding | None,
    actor: MemoryAuthor,
    memory_type: str = "fact",
    importance: int = 50,
    metadata: dict[str, Any] | None = None,
    source_type: str = "api",
    source_id: UUID | None = None,
    category: str | None = None,
    expires_at: datetime.datetime | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    checked: bool = False,
) -> Memory:
    """A new active memory and its ADD history row. The caller has checked for an exact duplicate; with
    `checked`, also for the vector's size and for expired memories of the same text."""
    if not checked:
        if embedding is not None:
            await check_dimension(session, embedding)
        await forget_expired(session, user_id, [memory_hash(text_value)])
    memory = Memory(
        user_id=user_id,
        memory_text=normalize(text_value),
        memory_hash=memory_hash(text_value),
        memory_type=memory_type,
        importance_score=importance,
        attributes=metadata or {},
        category=category,
        expires_at=expires_at,
        agent_id=agent_id,
        run_id=run_id,
        source_type=source_type,
        source_id=source_id,
        embedding=embedding.vector if embedding else None,
        embedding_model=embedding.model if embedding else None,
        embedding_dim=len(embedding.vector) if embedding else None,
    )
    session.add(memory)
    await session.flush()
    session.add(_history(memory, "ADD", actor, old=None, new=memory.memory_text, reason=None))
    return memory


async def change_memory(
    session: AsyncSession,
    memory: Memory,
    *,
    text_value: str,
    embedding: Embedding | None,
    actor: MemoryAuthor,
    reason: str | None = None,
) -> Memory:
    """New text (and vector) for a memory, with the old text kept in its history."""
    if memory.status != "active":
        raise InvalidRequest("This memory was invalidated; add the fact again instead of changing it.")
    new_text = normalize(text_value)
    if memory_hash(new_text) != memory.memory_hash:
        duplicate = await find_duplicate(session, memory.user_id, new_text)
        if duplicate is not None and duplicate.id != memory.id:
            raise InvalidRequest("Another of your memories already says this.")
    if embedding is not None:
        await check_dimension(session, embedding)
    old_text = memory.memory_text
    memory.memory_text = new_text
    memory.memory_hash = memory_hash(new_text)
    if embedding is not None:
        memory.embedding = embedding.vector
        memory.embedding_model = embedding.model
        memory.embedding_dim = len(embedding.vector)
    session.add(_history(memory, "UPDATE", actor, old=old_text, new=new_text, reason=reason))
    await session.flush()
    return memory


async def invalidate_memory(
    session: AsyncSession,
    memory: Memory,
    *,
    reason: str,
    actor: MemoryAuthor,
    superseded_by: Memory | None = None,
) -> Memory:
    """Contradicted: kept, with when and why (and by which newer memory, if one replaced it), but no longer
    searched or put into chat context."""
    if superseded_by is not None:
        reason = f"{reason} Superseded by memory {superseded_by.id}."
    memory.status = "invalidated"
    memory.invalidated_at = datetime.datetime.now(datetime.UTC)
    memory.invalidation_reason = reason
    memory.superseded_by = superseded_by.id if superseded_by else None
    entry = _history(memory, "INVALIDATE", actor, old=memory.memory_text, new=None, reason=reason)
    entry.superseded_by = memory.superseded_by
    session.add(entry)
    await session.flush()
    return memory


async def link_similar(
    session: AsyncSession, memory: Memory, embedding: Embedding | None, *, threshold: float, limit: int = 5
) -> int:
    """Associate a memory (just given `embedding`) with the user's memories at least `threshold` similar to
    it, both directions."""
    if embedding is None:
        return 0
    linked = 0
    # Exact, as extraction's neighbours are: a link missed by the approximate index is never made later.
    neighbours = await nearest(session, user_id=memory.user_id, embedding=embedding, limit=limit + 1, exact=True)
    for other_id, similarity in neighbours:
        if other_id == memory.id or similarity < threshold:
            continue
        strength = min(max(similarity, 0.0), 1.0)
        await session.execute(
            pg_insert(MemoryAssociation)
            .values(
                [
                    {
                        "tenant_id": memory.tenant_id,
                        "memory_id": first,
                        "related_memory_id": second,
                        "strength": strength,
                    }
                    for first, second in ((memory.id, other_id), (other_id, memory.id))
                ]
            )
            .on_conflict_do_nothing(constraint="uk_memory_associations_pair")
        )
        linked += 1
    return linked


async def associations(session: AsyncSession, memory: Memory) -> list[tuple[UUID, float]]:
    rows = await session.execute(
        select(MemoryAssociation.related_memory_id, MemoryAssociation.strength)
        .where(MemoryAssociation.memory_id == memory.id)
        .order_by(MemoryAssociation.strength.desc())
    )
    return [(row[0], float(row[1])) for row in rows]


async def memory_texts(session: AsyncSession, memory_ids: list[UUID]) -> dict[UUID, str]:
    """The text of each of these memories the caller's tenant holds (an association may outlive its memory)."""
    rows = await session.execute(select(Memory.id, Memory.memory_text).where(Memory.id.in_(memory_ids)))
    return {row.id: row.memory_text for row in rows}


async def erase_memories(session: AsyncSession, *, user_id: UUID, memory_id: UUID | None = None) -> int:
    """Erase one memory, or all of a user's, with their history and associations (the right to erasure)."""
    statement = delete(Memory).where(Memory.user_id == user_id)
    if memory_id is not None:
        statement = statement.where(Memory.id == memory_id)
    result = await session.execute(statement)
    return int(result.rowcount)  # type: ignore[attr-defined]


def memory_status(settings: MemorySettings) -> str | None:
    """Why conversations add no memories, if they do not: said where memories are shown, else it goes unseen."""
    if not settings.enabled:
        return "Memory is turned off for this organization: conversations add and use no memories."
    if settings.llm_model is None:
        return "Memory is on, but no extraction model is set: conversations add no memories."
    return None


async def remember(
    session: AsyncSession,
    gateway: Gateway,
    *,
    owner: UUID,
    author: MemoryAuthor,
    text_value: str,
    memory_type: str = "fact",
    importance: int = 50,
    metadata: dict[str, Any] | None = None,
    category: str | None = None,
    expires_at: datetime.datetime | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
) -> Memory:
    """A memory a person writes (stored as written, no extraction): found by meaning where the organization
    has an embedding model, linked to the owner's similar memories. The embedding is billed to the author."""
    check_expiry(expires_at)
    settings = await memory_settings(session)
    if not settings.enabled:
        raise Conflict("Memory is turned off for this organization.")
    if await find_duplicate(session, owner, text_value) is not None:
        raise Conflict("This memory is already there.", field="text")
    assert author.user_id is not None  # a person, not a job
    embedding = await query_embedding(session, gateway, author.user_id, settings, text_value)
    memory = await add_memory(
        session,
        user_id=owner,
        text_value=text_value,
        embedding=embedding,
        actor=author,
        memory_type=memory_type,
        importance=importance,
        metadata=metadata,
        category=category,
        expires_at=expires_at,
        agent_id=agent_id,
        run_id=run_id,
    )
    await link_similar(session, memory, embedding, threshold=settings.association_threshold)
    return memory


async def remember_batch(
    session: AsyncSession, gateway: Gateway, *, owner: UUID, author: MemoryAuthor, items: list[BatchItem]
) -> list[Memory]:
    """Memories a person writes, all or none: one embedding call for them all (billed to the author), then
    each stored and linked to the owner's similar memories. A bad item refuses the batch, naming its index."""
    settings = await memory_settings(session)
    if not settings.enabled:
        raise Conflict("Memory is turned off for this organization.")
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        check_expiry(item.expires_at, field=f"memories[{index}].expires_at")
        key = memory_hash(item.text)
        if key in seen:
            raise InvalidRequest(
                f"`memories[{index}].text` says the same as item {seen[key]}; nothing was stored.",
                field=f"memories[{index}].text",
            )
        seen[key] = index
    existing = set(
        await session.scalars(
            select(Memory.memory_hash).where(
                Memory.user_id == owner,
                Memory.memory_hash.in_(list(seen)),
                Memory.status == "active",
                not_expired(),
            )
        )
    )
    for key, index in seen.items():
        if key in existing:
            raise Conflict(
                f"`memories[{index}].text`: this memory is already there; nothing was stored.",
                field=f"memories[{index}].text",
            )
    embeddings: list[Embedding | None] = [None] * len(items)
    if settings.embedding_model is not None:
        assert author.user_id is not None  # a person, not a job
        token = await chat_token(session, author.user_id)
        await session.commit()
        vectors = await embed(gateway, token, settings.embedding_model, [item.text for item in items])
        embeddings = [Embedding(model=settings.embedding_model, vector=vector) for vector in vectors]
        first = embeddings[0]
        assert first is not None
        try:
            await check_dimension(session, first)
        except DimensionConflict as conflict:
            # `embed` answers vectors of one size: the first item stands for them all.
            raise DimensionConflict(f"`memories[0]`: {conflict.detail}", field="memories[0].text") from None
    await forget_expired(session, owner, list(seen))
    memories = [
        await add_memory(
            session,
            user_id=owner,
            text_value=item.text,
            embedding=embedding,
            actor=author,
            memory_type=item.memory_type,
            importance=item.importance,
            metadata=item.metadata,
            category=item.category,
            expires_at=item.expires_at,
            agent_id=item.agent_id,
            run_id=item.run_id,
            checked=True,
        )
        for item, embedding in zip(items, embeddings, strict=True)
    ]
    for memory, embedding in zip(memories[:BATCH_LINKED], embeddings, strict=False):
        await link_similar(session, memory, embedding, threshold=settings.association_threshold)
    return memories


async def edit_memory(
    session: AsyncSession, gateway: Gateway, memory_id: UUID, *, author: MemoryAuthor, data: MemoryUpdate
) -> Memory:
    """Change one of the author's own memories: its text (the old one kept in its history), its category,
    its expiry."""
    assert author.user_id is not None  # a person, not a job
    if data.text is msgspec.UNSET and data.category is msgspec.UNSET and data.expires_at is msgspec.UNSET:
        raise InvalidRequest("Send at least one of `text`, `category` and `expires_at`.", field="text")
    if data.expires_at is not msgspec.UNSET:
        check_expiry(data.expires_at)
    embedding = None
    if data.text is not msgspec.UNSET:
        settings = await memory_settings(session)
        # The embedding first: fetching it commits (the author's chat key), which would release a row lock.
        embedding = await query_embedding(session, gateway, author.user_id, settings, data.text)
    memory = await visible_memory(session, memory_id, user_id=author.user_id, is_admin=False, for_change=True)
    if data.text is not msgspec.UNSET:
        await change_memory(
            session, memory, text_value=data.text, embedding=embedding, actor=author, reason="Corrected by the user."
        )
    if data.category is not msgspec.UNSET:
        memory.category = data.category
    if data.expires_at is not msgspec.UNSET:
        memory.expires_at = data.expires_at
    await session.flush()
    # Reloaded while the row is locked by this transaction: after the commit it may be erased.
    await session.refresh(memory)
    return memory


async def erase_and_record(
    session: AsyncSession, *, actor_user_id: UUID, owner: UUID, memory_id: UUID | None = None
) -> int:
    """`erase_memories`, with an audit event that says that memories went (never what they said)."""
    erased = await erase_memories(session, user_id=owner, memory_id=memory_id)
    record_audit_event(
        session,
        actor=str(actor_user_id),
        actor_user_id=actor_user_id,
        action="memory.erased",
        target_type="user",
        target_id=owner,
        details={"count": erased, "memory_id": str(memory_id) if memory_id else None},
    )
    return erased
