"""The response cache: a tenant's identical chat calls answered from Redis, at a fraction of the first's cost."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from typing import Any

import anyio
import msgspec

from app.gateway.adapters.base import Usage
from app.gateway.caches import TokenInfo
from app.gateway.engine import Answer, Gateway, StreamAnswer, UsageRecord
from app.gateway.limits import tenant_key
from app.gateway.schemas import ResponseCacheSettings
from app.observability.logging import get_logger

CACHE_HEADER = "x-lyss-cache"
# Request fields that change nothing in the answer: the stream flag is a key part of its own, the rest are
# bookkeeping the provider does not answer by (who asked, what to tag or keep, which prompt cache to use).
IGNORED_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
)
# Headers of the first answer that are not the cached one's: how long this worker took differs per call.
UNREPLAYED_HEADERS = frozenset({"x-lyss-overhead-ms"})
CLAMPED_HEADER = "x-lyss-output-limit-clamped"
logger = get_logger("lyss.gateway")

Observer = Callable[[UsageRecord], None]
# Runs the call upstream (the gateway's own path), telling `observer` the usage record it settles with.
Upstream = Callable[[Observer | None], Awaitable[Answer | StreamAnswer]]


class CachedAnswer(msgspec.Struct):
    """One kept answer: a whole body or a stream's events (as the client got them), and what it cost."""

    model: str
    headers: dict[str, str]
    body: bytes | None
    events: list[bytes] | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cost: int
    upstream_model: str | None


class CacheUse(msgspec.Struct, frozen=True):
    """How one call uses the cache: its Redis key, whether to look it up and whether to keep its answer."""

    key: str
    settings: ResponseCacheSettings
    lookup: bool
    store: bool


def cache_control(header: str | None) -> tuple[bool, bool]:
    """(no-cache, no-store) from a `Cache-Control` request header."""
    directives = {part.strip().lower() for part in (header or "").split(",")}
    return "no-cache" in directives, "no-store" in directives


def request_digest(body: dict[str, Any], *, endpoint: str, stream: bool) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of what changes the answer, as the client's dialect sent it.

    The endpoint is part of it (a Chat Completions answer is not a Messages one), so is streaming, and, for a
    stream, whether the client asked for the usage chunk (the events differ)."""
    options = body.get("stream_options")
    material = {
        "endpoint": endpoint,
        "stream": stream,
        "usage_chunk": stream and isinstance(options, dict) and options.get("include_usage") is True,
        "request": {name: value for name, value in body.items() if name not in IGNORED_FIELDS},
    }
    return hashlib.sha256(msgspec.json.encode(material, order="sorted")).hexdigest()


def sampled(body: dict[str, Any]) -> bool:
    """Whether the answer is sampled, so differs from call to call: a temperature above 0, or none (providers
    default to 1)."""
    temperature = body.get("temperature")
    return isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature > 0


def hit_charge(cost: int, fraction: float) -> int:
    """The fraction of the first call's cost a hit pays, rounded up. The fraction is read as the decimal it was
    typed as: 0.1 of 10 credits is 1, where the binary float's product would round up to 2."""
    return math.ceil(Fraction(str(fraction)) * cost)


class ResponseCache:
    """Looks calls up, keeps their answers, and serves hits through the gateway's reservation and settlement."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def use(
        self, token: TokenInfo, body: dict[str, Any], *, endpoint: str, cache_control_header: str | None
    ) -> CacheUse | None:
        """How this call uses the cache, or None when it does not (then nothing touches Redis)."""
        if token.response_cache == "off":
            return None
        settings = await self.gateway.catalog.response_cache(token.tenant_id)
        if not (settings.enabled or token.response_cache == "on"):
            return None
        if sampled(body) and not settings.cache_sampled:
            return None
        no_cache, no_store = cache_control(cache_control_header)
        if no_store:
            return None
        stream = body.get("stream") is True
        digest = request_digest(body, endpoint=endpoint, stream=stream)
        return CacheUse(tenant_key(token.tenant_id, f"cache:{digest}"), settings, lookup=not no_cache, store=True)

    async def serve(
        self,
        token: TokenInfo,
        body: dict[str, Any],
        *,
        endpoint: str,
        cache_control_header: str | None,
        request_id: str | None,
        upstream: Upstream,
    ) -> Answer | StreamAnswer:
        """The call's answer: from the cache where it holds one, else from `upstream` (kept if it succeeds).

        `body` is the request as the client sent it, in the dialect of `endpoint`. An endpoint uses the cache by
        calling this with its own name and a closure that runs its call with the observer it is given."""
        use = await self.use(token, body, endpoint=endpoint, cache_control_header=cache_control_header)
        if use is None:
            return await upstream(None)
        if use.lookup:
            entry = await self._get(use.key)
            if entry is not None:
                return await self._hit(token, entry, use, endpoint=endpoint, request_id=request_id)
        records: list[UsageRecord] = []
        answer = await upstream(records.append)
        marked = {CACHE_HEADER: "miss"} if use.lookup else {}
        if isinstance(answer, StreamAnswer):
            return StreamAnswer(chunks=self._kept_stream(answer, use, records), headers=answer.headers | marked)
        if answer.settle is not None:
            # Settled before answering, not after: the entry needs the call's cost, and must be there once the
            # client has its answer (an identical call right after is a hit). Shielded as after the answer.
            with anyio.CancelScope(shield=True):
                try:
                    await answer.settle()
                except Exception as error:
                    # As after an answer: the reservation stays taken (the safe side); nothing is kept.
                    logger.error("settlement failed before a cached answer was kept", exc_info=error)
                    return Answer(body=answer.body, headers=answer.headers | marked)
        await self._keep(use, answer.headers, records, body=answer.body, events=None)
        return Answer(body=answer.body, headers=answer.headers | marked)

    async def _get(self, key: str) -> CachedAnswer | None:
        raw = await self.gateway.redis.get(key)
        if not isinstance(raw, bytes):
            return None
        try:
            return msgspec.msgpack.decode(raw, type=CachedAnswer)
        except msgspec.DecodeError:
            # An entry of another version of Lyss: a miss, replaced by this call's answer.
            return None

    async def _keep(
        self,
        use: CacheUse,
        headers: dict[str, str],
        records: list[UsageRecord],
        *,
        body: bytes | None,
        events: list[bytes] | None,
    ) -> None:
        """Keep a successful, complete answer that fits; a clamped one answered the budget, not the request."""
        record = records[-1] if records else None
        if record is None or record.outcome != "ok" or record.status_code != 200 or CLAMPED_HEADER in headers:
            return
        entry = CachedAnswer(
            model=record.details.get("alias") or record.model,
            headers={name: value for name, value in headers.items() if name not in UNREPLAYED_HEADERS},
            body=body,
            events=events,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
            cache_write_tokens=record.cache_write_tokens,
            cost=record.cost,
            upstream_model=record.upstream_model,
        )
        encoded = msgspec.msgpack.encode(entry)
        if len(encoded) > use.settings.max_entry_bytes:
            return
        try:
            await self.gateway.redis.set(use.key, encoded, ex=use.settings.ttl_seconds)
        except Exception as failure:
            # The client has its answer either way; the next identical call is a miss.
            logger.warning("answer not cached", error=f"{type(failure).__name__}: {failure}")

    async def _kept_stream(
        self, answer: StreamAnswer, use: CacheUse, records: list[UsageRecord]
    ) -> AsyncIterator[bytes]:
        """Pass the stream on, keeping its events in order; kept once the relay has settled it as complete."""
        events: list[bytes] | None = []
        size = 0
        try:
            async for event in answer.chunks:
                if events is not None:
                    size += len(event)
                    # Past the size limit the events are let go at once rather than held to the end.
                    if size > use.settings.max_entry_bytes:
                        events = None
                    else:
                        events.append(event)
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(answer.chunks, "aclose", None)
                if close is not None:
                    await close()
        if events is not None:
            await self._keep(use, answer.headers, records, body=None, events=events)

    async def _hit(
        self, token: TokenInfo, entry: CachedAnswer, use: CacheUse, *, endpoint: str, request_id: str | None
    ) -> Answer | StreamAnswer:
        charge = hit_charge(entry.cost, use.settings.hit_cost_fraction)
        stream = entry.events is not None
        call = await self.gateway.reserve_cached(
            token,
            entry.model,
            endpoint=endpoint,
            stream=stream,
            charge=charge,
            tokens=entry.prompt_tokens + entry.completion_tokens,
            request_id=request_id,
        )
        usage = Usage(entry.prompt_tokens, entry.completion_tokens, entry.cached_tokens, entry.cache_write_tokens)
        details = {"cache": "hit", "original_cost": entry.cost, "saved": entry.cost - charge}

        async def settle() -> int:
            return await self.gateway.settle_cached(
                call, usage=usage, charge=charge, upstream_model=entry.upstream_model, details=details
            )

        headers = entry.headers | {CACHE_HEADER: "hit"}
        if entry.events is None:
            return Answer(body=entry.body or b"", headers=headers, settle=settle)
        return StreamAnswer(chunks=_replay(entry.events, settle), headers=headers)


async def _replay(events: list[bytes], settle: Callable[[], Awaitable[int]]) -> AsyncIterator[bytes]:
    """A kept stream's events again, with the same framing; settled however it ends."""
    try:
        for event in events:
            yield event
    finally:
        with anyio.CancelScope(shield=True):
            await settle()
