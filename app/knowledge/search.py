"""Knowledge search: ready documents' passages by meaning (HNSW) and by words, fused by rank, reranked, diversified.

Runs in the caller's tenant session (RLS keeps tenants apart); which bases the caller may read is checked first,
so nothing is embedded or billed for a base out of reach.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID

import msgspec
import numpy as np
from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import ColumnElement, Select, Text, cast, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB, REGCONFIG, TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidRequest
from app.gateway.caches import TokenInfo
from app.gateway.client import cache_query_vector, cached_query_vector, embed, rerank
from app.gateway.engine import Gateway
from app.knowledge import search_cache
from app.knowledge.schemas import BaseSearch, ParentSection, SearchFilters, SearchHit
from app.knowledge.services import Caller, readable_bases
from app.memory.services import memory_settings
from db.knowledge import (
    HALFVEC_INDEXED_DIMENSIONS,
    INDEXED_DIMENSIONS,
    KnowledgeBase,
    KnowledgeChunk,
    KnowledgeDocument,
)

# Hybrid: a passage's cosine similarity plus at most this much for its words, as memory search does
# (app/memory/services.py, LEXICAL_WEIGHT): the best word match of the candidates lifts by the whole weight.
# Words move a passage past near misses by meaning, never past one much closer in meaning. Reciprocal rank
# fusion, which gives both legs equal say, was measured worse than vectors alone on the knowledge benchmark
# once the words leg matched any word (recall@1 0.628 against 0.731): a rank in the words list is a weaker
# signal than one in the meaning list, and equal votes let it outvote the better one.
LEXICAL_WEIGHT = 0.15
# Each leg brings this many candidates per requested result (at least MIN_CANDIDATES) to the fusion.
CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 20
# How many of the fused candidates a rerank model orders (each one is billed by the provider).
MAX_RERANKED = 50
# Maximal marginal relevance: the weight of relevance against likeness to the passages already chosen.
MMR_LAMBDA = 0.7
# ts_rank_cd's normalisation 32: rank / (rank + 1), a text score between 0 and 1.
RANK_NORMALIZATION = 32
# A query that uses search syntax: a quoted phrase, `or` between words, or a word to leave out (`-word`).
_SEARCH_SYNTAX = re.compile(r'"|\s(?:or|OR)\s|(?:^|\s)-\w')


Selected = TypeVar("Selected", bound=Select[*tuple[Any, ...]])


class Candidate(msgspec.Struct):
    chunk_id: UUID
    score: float
    # What MMR weighs against likeness: the cosine similarity to the query, the text rank, or the rerank score.
    relevance: float


async def search(
    session: AsyncSession,
    gateway: Gateway,
    *,
    tenant_id: UUID,
    caller: Caller,
    base_ids: Sequence[UUID],
    request: BaseSearch,
    payer: TokenInfo,
) -> list[SearchHit]:
    """The best passages of `base_ids` for `request`, best first, each with its parent section's text.

    The query is embedded (hybrid and vector modes) with the bases' embedding model, and reranked if asked, on
    `payer`: the user's chat key for Lyss's own searches, the API key of a /v1 call. So the calls are billed,
    limited and logged like any other on that key; a refusal of the gateway (budget, model) is raised as is.

    The same search of the same bases in the tenant within RESULTS_TTL_SECONDS, while none of the bases
    changed, is answered from Redis (`search_cache`): no embedding or rerank call, so nothing to pay.
    """
    bases = await readable_bases(session, list(dict.fromkeys(base_ids)), caller)
    rerank_model = await _rerank_model(session, request)
    # Looked up only once the caller is known to read every base: the key names them, so an entry serves
    # only a search of exactly these bases in this tenant, by someone who may read them.
    key = await search_cache.results_key(gateway.redis, tenant_id, [base.id for base in bases], request, rerank_model)
    hits = await search_cache.cached(gateway.redis, key)
    if hits is None:
        hits = await _searched_now(session, gateway, tenant_id, bases, request, rerank_model, payer)
        await search_cache.keep(gateway.redis, key, hits)
    return hits


async def _searched_now(
    session: AsyncSession,
    gateway: Gateway,
    tenant_id: UUID,
    bases: list[KnowledgeBase],
    request: BaseSearch,
    rerank_model: str | None,
    payer: TokenInfo,
) -> list[SearchHit]:
    candidates = max(request.limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
    query_vector: list[float] | None = None
    vector_ranked: list[tuple[UUID, float]] = []
    text_ranked: list[tuple[UUID, float]] = []
    if request.mode != "text":
        model, dimension = await _shared_model(session, bases)
        query_vector = await _query_vector(session, gateway, tenant_id, payer, model, request.query)
        if dimension is not None and dimension != len(query_vector):
            raise Conflict(
                f"The embedding model '{model}' answered {len(query_vector)} dimensions, but these bases' passages "
                f"have {dimension}: re-index them."
            )
        await _tune(session, candidates)
        vector_ranked = await _nearest(session, bases, request.filters, model, query_vector, candidates)
    if request.mode != "vector":
        text_ranked = await _by_words(session, bases, request.filters, request.query, candidates)
    if request.mode == "hybrid" and query_vector is not None:
        pool = await _lifted(session, query_vector, vector_ranked, text_ranked)
    else:
        pool = [Candidate(chunk_id, score, score) for chunk_id, score in vector_ranked or text_ranked]
    # The candidates' vectors (kilobytes each) are read only for MMR, which weighs them against each other.
    vectors: dict[UUID, np.ndarray] = {}
    if request.diversity:
        vectors = await _vectors(session, [candidate.chunk_id for candidate in pool])
        if query_vector is not None:
            query = np.asarray(query_vector, dtype=np.float32)
            for candidate in pool:
                vector = vectors.get(candidate.chunk_id)
                candidate.relevance = _cosine(query, vector) if vector is not None else 0.0
    if rerank_model is not None and pool:
        pool = await _reranked(session, gateway, payer, rerank_model, request.query, pool[:MAX_RERANKED])
    chosen = _diversified(pool, vectors, request.limit) if request.diversity else pool[: request.limit]
    return await _hits(session, chosen)


async def _rerank_model(session: AsyncSession, request: BaseSearch) -> str | None:
    if not request.rerank:
        if request.rerank_model is not None:
            raise InvalidRequest("`rerank_model` is only for a search with `rerank: true`.", field="rerank_model")
        return None
    model = request.rerank_model or (await memory_settings(session)).rerank_model
    if model is None:
        raise InvalidRequest(
            "`rerank_model`: name a rerank model; the organization has none set in its memory settings.",
            field="rerank_model",
        )
    return model


async def _shared_model(session: AsyncSession, bases: list[KnowledgeBase]) -> tuple[str, int | None]:
    """The one embedding model of the bases and the size of their passages' vectors (None before any is embedded);
    bases of different models or sizes cannot be searched together by meaning."""
    models = sorted({base.embedding_model for base in bases})
    if len(models) > 1:
        raise InvalidRequest(
            f"`base_ids`: these bases are embedded with different models ({', '.join(models)}); search them "
            "separately or with `mode: text`.",
            field="base_ids",
        )
    model = models[0]
    # One passage of each base tells its size: the index on (base, level) finds it at once.
    size_of_base = (
        select(KnowledgeChunk.embedding_dim)
        .where(
            KnowledgeChunk.base_id == KnowledgeBase.id,
            KnowledgeChunk.level == "passage",
            KnowledgeChunk.embedding_model == model,
            KnowledgeChunk.embedding_dim.is_not(None),
        )
        .limit(1)
        .scalar_subquery()
    )
    sizes = set(
        await session.scalars(select(size_of_base).where(KnowledgeBase.id.in_([base.id for base in bases])))
    ) - {None}
    if len(sizes) > 1:
        raise InvalidRequest(
            f"`base_ids`: these bases' vectors have different sizes ({', '.join(map(str, sorted(sizes)))}); "
            "search them separately or with `mode: text`.",
            field="base_ids",
        )
    return model, next(iter(sizes), None)


async def _query_vector(
    session: AsyncSession, gateway: Gateway, tenant_id: UUID, payer: TokenInfo, model: str, text: str
) -> list[float]:
    """The query's vector, billed to `payer`; the same text searched again within the minute on the same key is
    not embedded (or billed) again.

    Cached by the paying key's id, not by its user: a user's chat key and their API keys each have their own
    budget, rate and allowed models, and a vector one of them paid for must not spare another that check (a
    key not allowed the embedding model, or out of budget, would otherwise search by meaning on the user's
    chat key's earlier payment). The price is one more embedding when the same user asks the same thing
    through two keys within the minute."""
    vector = cached_query_vector(gateway, tenant_id, payer.id, model, text)
    if vector is not None:
        return vector
    # A chat key may have just been created: committed before the gateway, which reads it on its own connection.
    await session.commit()
    vector = (await embed(gateway, payer, model, [text]))[0]
    cache_query_vector(gateway, tenant_id, payer.id, model, text, vector)
    return vector


async def _tune(session: AsyncSession, candidates: int) -> None:
    await session.execute(
        select(
            # pgvector filters after the index scan: iterative scanning goes on until enough rows pass the
            # tenant's policy, the bases, the ready documents and the filters, so a small base in a large
            # tenant is not starved.
            func.set_config("hnsw.iterative_scan", "relaxed_order", True),
            func.set_config("hnsw.ef_search", str(max(40, 2 * candidates)), True),
        )
    )


def _searched(bases: list[KnowledgeBase], filters: SearchFilters | None) -> list[ColumnElement[bool]]:
    """Passages of the bases' ready documents that pass `filters` (the chunks joined to their documents)."""
    conditions = [
        KnowledgeChunk.base_id.in_([base.id for base in bases]),
        KnowledgeChunk.level == "passage",
        KnowledgeDocument.status == "ready",
    ]
    if filters is None:
        return conditions
    if filters.document_ids is not None:
        conditions.append(KnowledgeChunk.document_id.in_(filters.document_ids))
    if filters.content_types is not None:
        conditions.append(KnowledgeDocument.content_type.in_(filters.content_types))
    for key, value in (filters.metadata or {}).items():
        # `->` and equality, not containment: {"tags": ["a"]} must not match a document tagged ["a", "b"].
        conditions.append(
            KnowledgeDocument.attributes.op("->")(key) == cast(literal(msgspec.json.encode(value).decode()), JSONB)
        )
    if filters.created_after is not None:
        conditions.append(KnowledgeDocument.created_at > filters.created_after)
    if filters.created_before is not None:
        conditions.append(KnowledgeDocument.created_at < filters.created_before)
    return conditions


def _joined(statement: Selected) -> Selected:
    return statement.join(KnowledgeDocument, KnowledgeDocument.id == KnowledgeChunk.document_id)


def _distance(query_vector: list[float], dimension: int) -> Any:
    """Cosine distance written so that the HNSW index of this size serves it (any other size is compared exactly)."""
    if dimension in INDEXED_DIMENSIONS:
        return cast(KnowledgeChunk.embedding, Vector(dimension)).cosine_distance(query_vector)
    if dimension in HALFVEC_INDEXED_DIMENSIONS:
        return cast(KnowledgeChunk.embedding, HALFVEC(dimension)).cosine_distance(query_vector)
    return KnowledgeChunk.embedding.cosine_distance(query_vector)


async def _nearest(
    session: AsyncSession,
    bases: list[KnowledgeBase],
    filters: SearchFilters | None,
    model: str,
    query_vector: list[float],
    candidates: int,
) -> list[tuple[UUID, float]]:
    """(chunk, cosine similarity) of the passages nearest the query, best first."""
    dimension = len(query_vector)
    distance = _distance(query_vector, dimension)
    statement = (
        _joined(select(KnowledgeChunk.id, distance.label("distance")))
        .where(
            *_searched(bases, filters),
            KnowledgeChunk.embedding_model == model,
            KnowledgeChunk.embedding_dim == dimension,
        )
        .order_by(distance)
        .limit(candidates)
    )
    rows = (await session.execute(statement)).all()
    # relaxed_order may hand the rows back slightly out of order: ordered exactly here.
    return sorted(((row.id, 1.0 - float(row.distance)) for row in rows), key=lambda item: -item[1])


async def _by_words(
    session: AsyncSession, bases: list[KnowledgeBase], filters: SearchFilters | None, query: str, candidates: int
) -> list[tuple[UUID, float]]:
    """(chunk, text rank 0..1) of the passages matching the query's words, best first.

    The query is parsed once per base, in the base's language (stemming and stop words of that language). A
    question matches a passage that has ANY of its words, ranked by how many and how close (`ts_rank_cd`):
    requiring every word, as a search engine's default does, left the words leg empty for 72 of the knowledge
    benchmark's 78 questions. A query written with search syntax (quoted phrases, `or`, `-word`) is taken
    as written (`websearch_to_tsquery`). No input is a syntax error either way.
    """
    language = cast(KnowledgeBase.language, REGCONFIG)
    if _SEARCH_SYNTAX.search(query):
        terms: ColumnElement[Any] = func.websearch_to_tsquery(language, query)
    else:
        # plainto_tsquery joins the lexemes with `&`, each quoted: as `|`, any of them matches.
        terms = cast(func.replace(cast(func.plainto_tsquery(language, query), Text), "&", "|"), TSQUERY)
    parsed = (
        select(
            KnowledgeBase.id.label("base_id"),
            terms.label("terms"),
        )
        .where(KnowledgeBase.id.in_([base.id for base in bases]))
        .cte("parsed")
    )
    rank = func.ts_rank_cd(KnowledgeChunk.search_vector, parsed.c.terms, RANK_NORMALIZATION)
    statement = (
        _joined(select(KnowledgeChunk.id, rank.label("rank")))
        .join(parsed, parsed.c.base_id == KnowledgeChunk.base_id)
        .where(*_searched(bases, filters), KnowledgeChunk.search_vector.op("@@")(parsed.c.terms))
        .order_by(rank.desc(), KnowledgeChunk.id)
        .limit(candidates)
    )
    return [(row.id, float(row.rank)) for row in (await session.execute(statement)).all()]


async def _lifted(
    session: AsyncSession,
    query_vector: list[float],
    vector_ranked: list[tuple[UUID, float]],
    text_ranked: list[tuple[UUID, float]],
) -> list[Candidate]:
    """Both legs' candidates, best first by cosine similarity plus LEXICAL_WEIGHT times the text rank scaled to
    the best one's (the words-only candidates' similarity computed from their stored vectors)."""
    similarity = dict(vector_ranked)
    words_only = [chunk_id for chunk_id, _ in text_ranked if chunk_id not in similarity]
    if words_only:
        query = np.asarray(query_vector, dtype=np.float32)
        vectors = await _vectors(session, words_only)
        for chunk_id in words_only:
            vector = vectors.get(chunk_id)
            if vector is not None:  # a passage without a vector (being re-embedded) is not searched by meaning
                similarity[chunk_id] = _cosine(query, vector)
    best_rank = max((rank for _, rank in text_ranked), default=0.0)
    word_score = {chunk_id: rank / best_rank for chunk_id, rank in text_ranked} if best_rank > 0 else {}
    scored = {
        chunk_id: cosine + LEXICAL_WEIGHT * word_score.get(chunk_id, 0.0) for chunk_id, cosine in similarity.items()
    }
    ordered = sorted(scored.items(), key=lambda item: (-item[1], str(item[0])))
    return [Candidate(chunk_id, score, similarity[chunk_id]) for chunk_id, score in ordered]


async def _vectors(session: AsyncSession, chunk_ids: list[UUID]) -> dict[UUID, np.ndarray]:
    if not chunk_ids:
        return {}
    rows = await session.execute(
        select(KnowledgeChunk.id, KnowledgeChunk.embedding).where(
            KnowledgeChunk.id.in_(chunk_ids), KnowledgeChunk.embedding.is_not(None)
        )
    )
    return {row.id: np.asarray(row.embedding, dtype=np.float32) for row in rows}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms else 0.0


async def _reranked(
    session: AsyncSession, gateway: Gateway, payer: TokenInfo, model: str, query: str, pool: list[Candidate]
) -> list[Candidate]:
    """`pool` in the rerank model's order, its relevance as the score, billed to `payer`; those it leaves
    unranked follow in the search's order."""
    texts = dict(
        (
            await session.execute(
                select(KnowledgeChunk.id, KnowledgeChunk.text).where(KnowledgeChunk.id.in_([c.chunk_id for c in pool]))
            )
        ).all()
    )
    await session.commit()
    ranking = await rerank(gateway, payer, model, query, [texts.get(candidate.chunk_id, "") for candidate in pool])
    # The gateway has checked the ranking: indices in range, none twice.
    ranked = [msgspec.structs.replace(pool[index], score=score, relevance=score) for index, score in ranking]
    named = {index for index, _ in ranking}
    return ranked + [candidate for index, candidate in enumerate(pool) if index not in named]


def _diversified(pool: list[Candidate], vectors: dict[UUID, np.ndarray], limit: int) -> list[Candidate]:
    """Maximal marginal relevance: each next passage is the one with the best relevance less its likeness to the
    passages already chosen, so a near copy of a chosen passage (the same paragraph in two documents) gives way
    to one that adds something."""
    chosen: list[Candidate] = []
    left = list(pool)
    while left and len(chosen) < limit:

        def marginal(candidate: Candidate) -> float:
            vector = vectors.get(candidate.chunk_id)
            likeness = max(
                (
                    _cosine(vector, other)
                    for picked in chosen
                    if vector is not None and (other := vectors.get(picked.chunk_id)) is not None
                ),
                default=0.0,
            )
            return MMR_LAMBDA * candidate.relevance - (1.0 - MMR_LAMBDA) * likeness

        best = max(left, key=marginal)
        chosen.append(best)
        left.remove(best)
    return chosen


async def _hits(session: AsyncSession, chosen: list[Candidate]) -> list[SearchHit]:
    if not chosen:
        return []
    rows = await session.execute(
        _joined(select(KnowledgeChunk, KnowledgeDocument.filename)).where(
            KnowledgeChunk.id.in_([candidate.chunk_id for candidate in chosen])
        )
    )
    chunks = {chunk.id: (chunk, filename) for chunk, filename in rows}
    parent_ids = {chunk.parent_id for chunk, _ in chunks.values() if chunk.parent_id is not None}
    parents: dict[UUID, str] = {}
    if parent_ids:
        parents = dict(
            (
                await session.execute(
                    select(KnowledgeChunk.id, KnowledgeChunk.text).where(KnowledgeChunk.id.in_(parent_ids))
                )
            ).all()
        )
    hits = []
    for candidate in chosen:
        if candidate.chunk_id not in chunks:
            continue  # deleted since it was found
        chunk, filename = chunks[candidate.chunk_id]
        parent = chunk.parent_id
        hits.append(
            SearchHit(
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                filename=filename,
                base_id=chunk.base_id,
                page=chunk.page,
                section=chunk.section,
                text=chunk.text,
                start_offset=chunk.start_offset,
                end_offset=chunk.end_offset,
                score=candidate.score,
                parent=ParentSection(chunk_id=parent, text=parents[parent])
                if parent is not None and parent in parents
                else None,
            )
        )
    return hits
