"""Knowledge search results kept in Redis per tenant, keyed by the question and the bases' index generations."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from app.gateway.limits import tenant_key
from app.knowledge.schemas import BaseSearch, SearchHit

# Short: a cached search repeats a question asked moments ago (a page re-rendered, the same question from
# several people, a client retrying). Freshness does not rest on it (a change to a base bumps its
# generation, so the entry is never read again), it only bounds the memory entries take.
RESULTS_TTL_SECONDS = 600
# A base's generation outlives every entry keyed by it: once it expires (a base unchanged for a day) and
# starts again from nothing, no entry made under the earlier numbers is left to be read by mistake.
GENERATION_TTL_SECONDS = 86_400
_SPACES = re.compile(r"\s+")

_hits = msgspec.msgpack.Decoder(list[SearchHit])


def _generation_key(tenant_id: UUID, base_id: UUID) -> str:
    return tenant_key(tenant_id, f"kb:generation:{base_id}")


def normalised_question(text: str) -> str:
    """The question as the cache compares it: Unicode NFKC, case folded, runs of white space one space, trimmed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


async def changed(redis: Redis, tenant_id: UUID, base_ids: Iterable[UUID]) -> None:
    """Mark the bases' searchable content changed: every search result cached for them is no longer read.

    Called after the change is committed, never before: a search that read the generation before the bump may
    still keep what it found under the old number, which nobody reads again; one that read the new number
    before the change was visible would keep stale results under it."""
    async with redis.pipeline(transaction=False) as pipe:
        for base_id in base_ids:
            key = _generation_key(tenant_id, base_id)
            pipe.incr(key)
            pipe.expire(key, GENERATION_TTL_SECONDS)
        await pipe.execute()


async def results_key(
    redis: Redis, tenant_id: UUID, base_ids: Sequence[UUID], request: BaseSearch, rerank_model: str | None
) -> str:
    """The Redis key of this search's results: SHA-256 of the normalised question, the bases, every parameter
    that changes the results (the rerank model as resolved) and each base's generation as it is now."""
    bases = sorted(set(base_ids), key=str)
    generations = await redis.mget([_generation_key(tenant_id, base_id) for base_id in bases])
    material = {
        "question": normalised_question(request.query),
        "bases": [str(base_id) for base_id in bases],
        "generations": [int(value) if value is not None else 0 for value in generations],
        "mode": request.mode,
        "limit": request.limit,
        "filters": request.filters,
        "rerank": request.rerank,
        "rerank_model": rerank_model,
        "diversity": request.diversity,
    }
    digest = hashlib.sha256(msgspec.json.encode(material, order="sorted")).hexdigest()
    return tenant_key(tenant_id, f"kb:search:{digest}")


async def cached(redis: Redis, key: str) -> list[SearchHit] | None:
    raw = await redis.get(key)
    if not isinstance(raw, bytes):
        return None
    try:
        return _hits.decode(raw)
    except msgspec.DecodeError:
        # An entry of another version of Lyss: a miss, replaced by this search's results.
        return None


async def keep(redis: Redis, key: str, hits: list[SearchHit]) -> None:
    await redis.set(key, msgspec.msgpack.encode(hits), ex=RESULTS_TTL_SECONDS)
