"""The /v1 hot path: authenticate the key, reserve, route with failover, call the adapter, settle, record.

One call costs, beyond the provider's own time: a cached token lookup (SECURITY DEFINER query on a
miss), one Redis round trip to reserve, and one to settle (which also queues the usage record).
Nothing here touches PostgreSQL per request once the caches are warm.
"""

from __future__ import annotations

import array
import asyncio
import datetime
import functools
import hashlib
import ipaddress
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

import aiohttp
import anyio
import msgspec
from cachetools import TTLCache
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.encryption import SecretBox
from app.gateway import errors
from app.gateway.adapters import ADAPTERS
from app.gateway.adapters.anthropic import AnthropicAdapter
from app.gateway.adapters.base import Chunk, Completion, Target, Timeouts, UpstreamError, Usage, estimated_tokens
from app.gateway.caches import ChannelInfo, GatewayCatalog, MemberInfo, TokenInfo, UnitPrice, announce_change
from app.gateway.dialects.anthropic import (
    COUNTED_BY_HEADER,
    AnthropicStreamWriter,
    CountTokensRequest,
    estimated_input_tokens,
    to_anthropic_response,
)
from app.gateway.dialects.media import (
    image_request,
    images_returned,
    moderation_checked,
    moderation_request,
    speech_request,
)
from app.gateway.dialects.openai import LIMIT_PARAMETERS, chat_request, embeddings_request
from app.gateway.dialects.rerank import Ranked, rerank_request, upstream_body
from app.gateway.dialects.rerank import ranked as ranked_answer
from app.gateway.dialects.responses import ResponsesStreamWriter, ResponsesTurn
from app.gateway.dialects.transcription import UNITS_PER_SECOND as TRANSCRIBED_UNITS_PER_SECOND
from app.gateway.dialects.transcription import Upload, billed_duration_ms, heard_duration_ms
from app.gateway.limits import GatewayLimits, Refusal, Reservation, Scope, Slot, lease_key
from app.gateway.routing import ChannelHealth, attempt_order, candidate_channels
from app.observability.logging import get_logger
from app.observability.metrics import (
    GATEWAY_OVERHEAD,
    GATEWAY_OVERSHOOT,
    GATEWAY_OVERSHOT_CALLS,
    GATEWAY_REJECTIONS,
    UPSTREAM_DURATION,
)
from app.settings import Settings
from app.tenants.money import format_money
from app.tenants.services import budgets_by_subject, record_audit_event
from app.tenants.webhooks import emit as emit_event
from db.provider import ApiToken, Channel
from db.session import tenant_session
from db.tenant import Organization

Dialect = Literal["openai", "anthropic", "responses"]
Endpoint = Literal["chat", "embeddings", "messages", "rerank", "responses"]
# How the usage log names the chat calls of each client dialect.
CHAT_ENDPOINTS: dict[Dialect, Endpoint] = {"openai": "chat", "anthropic": "messages", "responses": "responses"}
# How a refusal names each unit price a model lacks.
UNIT_NAMES: dict[UnitPrice, str] = {
    "image_price": "price per image",
    "audio_second_price": "price per second of audio transcribed",
    "speech_price": "price per million characters spoken",
    "request_price": "price per request",
}
# Special tokens a provider adds around each message: the prompt bound counts them on top of the bytes.
TOKENS_PER_MESSAGE = 8
# An image or document given by reference is a few bytes but many input tokens (gpt-4o-mini counts up to
# ~48,000 for one high-detail image): the prompt bound counts this many for each.
MEDIA_PROMPT_TOKENS = 50_000
# Redis scripts do their arithmetic in doubles, exact up to 2**53: no reservation may be larger.
MAX_RESERVATION = 2**53 - 1
MAX_ATTEMPTS_CAP = 10
# A call that names no output limit, from a budget that cannot pay for the default one, is sent with the
# largest limit the budget can pay for; below this many tokens an answer is of no use, so it is refused.
MIN_CLAMPED_OUTPUT_TOKENS = 16
CLAMP_HEADER = "x-lyss-output-limit-clamped"
# Refusals the usage log records (a malformed request, 400, is the client's bug, not a call).
RECORDED_REFUSALS = frozenset({401, 403, 404, 429, 503})
# How often a call waiting for a channel's slot looks again (seconds, jittered so waiters do not march).
QUEUE_POLL_SECONDS = 0.05
# A searched text's vector is kept this long per worker: about 6 KB each at 1,536 dimensions.
QUERY_VECTORS_CACHED = 4096
QUERY_VECTOR_TTL_SECONDS = 60

T = TypeVar("T")
logger = get_logger("lyss.gateway")


class UsageRecord(msgspec.Struct):
    """One line of the usage log, as queued in Redis and written to `provider_usage_logs` by the flusher."""

    id: str
    tenant_id: str
    user_id: str
    token_id: str
    channel_id: str | None
    request_id: str | None
    endpoint: str
    model: str
    upstream_model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: int
    latency_ms: int
    upstream_latency_ms: int | None
    status_code: int
    outcome: str
    stream: bool
    created_at: datetime.datetime
    details: dict[str, Any] = {}
    # Credits of reported usage beyond the reservation, which the key was not charged.
    overshoot: int = 0
    # The user's and groups' scopes (`user:<id>`, `group:<id>`) the cost was taken from, for their totals.
    budgets: list[str] = []
    # Of the prompt tokens: read from the provider's prompt cache, and written to it.
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class Answer(msgspec.Struct):
    body: bytes
    headers: dict[str, str]
    # With `defer_settlement`: the settlement still to run, once the answer is on its way.
    settle: Callable[[], Awaitable[int]] | None = None
    # Speech answers the provider's audio as it is.
    content_type: str = "application/json"


class StreamAnswer(msgspec.Struct):
    chunks: AsyncIterator[bytes]
    headers: dict[str, str]


class CallCost(msgspec.Struct, frozen=True):
    """Credits per million tokens. A prompt token read from the provider's cache costs `cached_prompt_price`,
    one written to it `cache_write_price`; each is the prompt price where the model has none."""

    prompt_price: int
    completion_price: int
    cached_prompt_price: int | None = None
    cache_write_price: int | None = None

    @property
    def worst_prompt_price(self) -> int:
        """What a prompt token may cost at most: before the call, nobody knows which will come from the cache."""
        return max(self.prompt_price, self.cached_prompt_price or 0, self.cache_write_price or 0)

    def of(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The worst case of a call of this size: every prompt token at the dearest prompt price."""
        # Prices are credits per million tokens; round up so that many small calls never cost nothing.
        # Integer ceiling division: exact at any size, where a float quotient is not.
        return -(-prompt_tokens * self.worst_prompt_price // 1_000_000) - (
            -completion_tokens * self.completion_price // 1_000_000
        )

    def billed(self, usage: Usage) -> int:
        """What the usage costs: plain, cached and cache-write prompt tokens each at their price, summed
        before rounding up (one ceiling for the prompt, one for the completion, as a call without cache)."""
        cached, written = usage.cache_counts()
        cached_price = self.prompt_price if self.cached_prompt_price is None else self.cached_prompt_price
        write_price = self.prompt_price if self.cache_write_price is None else self.cache_write_price
        prompt = usage.uncached_prompt_tokens() * self.prompt_price + cached * cached_price + written * write_price
        return -(-prompt // 1_000_000) - (-usage.completion_tokens * self.completion_price // 1_000_000)

    def affordable_completion(self, credits: int, prompt_tokens: int) -> int:
        """The most completion tokens that `credits` pay for beside `prompt_tokens` (0 if none)."""
        spare = credits + (-prompt_tokens * self.worst_prompt_price // 1_000_000)
        if spare <= 0 or self.completion_price == 0:
            return 0
        return spare * 1_000_000 // self.completion_price


class NativeRequest(msgspec.Struct, frozen=True):
    """A client's request in a provider's own format (an Anthropic Messages request), beside its OpenAI
    translation: a channel of that format is sent this instead, so that nothing is lost in translation."""

    api_format: str
    body: dict[str, Any]
    # Images and documents in it (the translation may drop some, the provider still counts them).
    media: int


class CallContext(msgspec.Struct, frozen=True):
    """What settling a call needs to know about it, whichever way it ends."""

    token: TokenInfo
    member: MemberInfo
    reservation: Reservation
    cost: CallCost
    endpoint: str
    model: str
    started: float
    stream: bool
    request_id: str | None
    # Told each usage record this call settles with (the response cache keeps a successful answer's).
    observer: Callable[[UsageRecord], None] | None = None


# What a call answered from the response cache is reserved on: no provider, so no channel's limits apply.
CACHE_CHANNEL = ChannelInfo(
    id=UUID(int=0),
    name="response cache",
    api_format="",
    output_limit_parameter="",
    base_url="",
    api_version=None,
    keys=(),
    priority=0,
    weight=0,
    models=frozenset(),
    model_mapping={},
    scope="tenant",
    owner_id=None,
    group_id=None,
    rate_limit=0,
    quota=-1,
)


def key_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """`Authorization: Bearer sk-...` (OpenAI SDKs) or `x-api-key: sk-...` (Anthropic SDKs)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return api_key.strip() if api_key else None


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_length(item) for key, item in value.items() if key in ("text", "content", "arguments"))
    return 0


def _embeddings_estimate(inputs: str | list[Any]) -> int:
    """Input tokens of an embeddings call: text at about four characters a token, token ids as they are."""
    if isinstance(inputs, str):
        return estimated_tokens(len(inputs))
    return sum(
        estimated_tokens(len(item)) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
        for item in inputs
    )


def _subject(scope: str, name: str) -> tuple[str, str]:
    """A spending scope's kind as the usage log records it, and how a message names it."""
    kind = scope.partition(":")[0]
    if kind == "token":
        return "key", "this API key"
    if kind == "user":
        return "user", "your account"
    if kind == "group":
        return "group", f"your group '{name}'"
    return "organization", "your organization"


def create_gateway(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], redis: Redis, secret_box: SecretBox
) -> Gateway:
    catalog = GatewayCatalog(
        session_maker, secret_box, settings.gateway_cache_seconds, echo_enabled=settings.echo_provider_enabled
    )
    return Gateway(settings, catalog, GatewayLimits(redis), session_maker, redis)


class Leg(msgspec.Struct, frozen=True):
    """One model a call may be served by (the one asked, or one of an alias's in turn), its channels, its price."""

    model: str
    channels: list[ChannelInfo]
    cost: CallCost


def _attempt(
    channel: ChannelInfo, status: int | None, started: float, error: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """One try of a channel, as the usage record lists it (with its model when an alias tried several)."""
    attempt: dict[str, Any] = {
        "channel_id": str(channel.id),
        "channel": channel.name,
        "status": status,
        "latency_ms": int((time.perf_counter() - started) * 1000),
    }
    if model is not None:
        attempt["model"] = model
    if error is not None:
        attempt["error"] = error[:300]
    return attempt


class Gateway:
    def __init__(
        self,
        settings: Settings,
        catalog: GatewayCatalog,
        limits: GatewayLimits,
        session_maker: async_sessionmaker[AsyncSession],
        redis: Redis,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.limits = limits
        self.session_maker = session_maker
        self.redis = redis
        self.timeouts = Timeouts(
            connect=settings.upstream_connect_timeout_seconds, read=settings.upstream_read_timeout_seconds
        )
        self.max_attempts = min(settings.gateway_max_attempts, MAX_ATTEMPTS_CAP)
        self.health = ChannelHealth()
        # Lyss's own query embeddings (memory and knowledge search), by (tenant, payer, model, text):
        # `client.cached_query_vector`.
        self.query_vectors: TTLCache[tuple[UUID, UUID, str, str], array.array[float]] = TTLCache(
            QUERY_VECTORS_CACHED, QUERY_VECTOR_TTL_SECONDS
        )
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # One pooled session per worker: connections to providers are reused across calls.
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300, keepalive_timeout=60),
                auto_decompress=True,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.limits.close()

    # --- who is calling ---------------------------------------------------------------------------

    async def authenticate(
        self, key: str | None, client_address: str | None, *, endpoint: str = "", request_id: str | None = None
    ) -> TokenInfo:
        """The key's token, or the refusal (401, or 403 from a disallowed address); a known key's is recorded."""
        if not key or not key.startswith("sk-"):
            raise errors.invalid_api_key("Send your Lyss API key: 'Authorization: Bearer sk-...'.")
        token = await self.catalog.token(hashlib.sha256(key.encode()).hexdigest())
        if token is None:
            raise errors.invalid_api_key()
        try:
            self._check_usable(token, client_address)
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint=endpoint, model="", request_id=request_id, started=time.perf_counter()
            )
            raise
        return token

    @staticmethod
    def _check_usable(token: TokenInfo, client_address: str | None) -> None:
        if not token.tenant_active:
            raise errors.permission_denied("This organization is suspended.", code="tenant_suspended")
        if not token.usable:
            raise errors.invalid_api_key("This API key is disabled or revoked.", reason="key_disabled")
        if token.expires_at is not None and token.expires_at <= datetime.datetime.now(datetime.UTC):
            raise errors.invalid_api_key("This API key has expired.", reason="key_expired")
        if token.allowed_networks:
            try:
                address = ipaddress.ip_address(client_address or "")
            except ValueError:
                address = None
            if address is None or not any(address in network for network in token.allowed_networks):
                raise errors.permission_denied("This API key may not be used from this address.", code="ip_not_allowed")

    async def models(self, token: TokenInfo) -> dict[str, Any]:
        """The models this key can reach: served by a channel it may use, and allowed to it and its owner."""
        member = await self.catalog.member(token.tenant_id, token.user_id)
        channels = await self.catalog.channels(token.tenant_id)
        served = {
            model
            for channel in channels
            for model in channel.models
            if candidate_channels([channel], model=model, token=token, user_groups=member.group_ids)
        }
        for allowed in (token.allowed_models, *(budget.allowed_models for budget in member.budgets)):
            if allowed:
                served &= allowed
        aliases = (await self.catalog.routing(token.tenant_id)).aliases
        served |= {name for name, models in aliases.items() if served.intersection(models)}
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "lyss"} for model in sorted(served)],
        }

    # --- the call ---------------------------------------------------------------------------------

    async def model(self, token: TokenInfo, model: str) -> dict[str, Any]:
        """One model of `models` (the SDKs' `models.retrieve`), or 404 if this key cannot reach it."""
        for entry in (await self.models(token))["data"]:
            if entry["id"] == model:
                return dict(entry)
        raise errors.model_not_found(model)

    @staticmethod
    def _check_model(token: TokenInfo, member: MemberInfo, model: str) -> None:
        if token.allowed_models and model not in token.allowed_models:
            raise errors.permission_denied(
                f"This API key may not use the model '{errors.shown(model)}'.", code="model_not_allowed"
            )
        for budget in member.budgets:
            if budget.allowed_models and model not in budget.allowed_models:
                kind, subject = _subject(budget.scope, budget.name)
                error = errors.permission_denied(
                    f"The policy of {subject} does not allow the model '{errors.shown(model)}'.",
                    code="model_not_allowed",
                )
                error.recorded.update(scope=kind, scope_name=budget.name)
                raise error

    @staticmethod
    def _worst_case(cost: CallCost, prompt_bound: int, completion_bound: int, limit_parameter: str) -> int:
        worst = cost.of(prompt_bound, completion_bound)
        if worst > MAX_RESERVATION:
            raise errors.invalid_request(
                "This request could cost more than can be reserved at this model's price; lower its output limit "
                "or its size.",
                param=limit_parameter,
            )
        return worst

    async def _plan(
        self, token: TokenInfo, model: str, *, embeddings: bool, rerank: bool = False, media: bool = False
    ) -> tuple[MemberInfo, list[ChannelInfo], CallCost]:
        """Who pays (the key's owner, their groups' and own budgets), which channels may serve, at what price."""
        member = await self.catalog.member(token.tenant_id, token.user_id)
        self._check_model(token, member, model)
        channels = candidate_channels(
            await self.catalog.channels(token.tenant_id),
            model=model,
            token=token,
            user_groups=member.group_ids,
            needs_embeddings=embeddings,
            needs_rerank=rerank,
            needs_media=media,
        )
        if not channels:
            raise errors.model_not_found(model)
        price = (await self.catalog.prices(token.tenant_id)).of(model)
        return (
            member,
            channels,
            CallCost(price.prompt_price, price.completion_price, price.cached_prompt_price, price.cache_write_price),
        )

    async def _plan_models(
        self, token: TokenInfo, model: str
    ) -> tuple[MemberInfo, list[Leg], list[ChannelInfo], CallCost]:
        """`_plan` for a chat call, whose model may be an alias of the tenant: its models in turn (those this key
        may use and reach), every channel of any of them (to reserve with), and the worst of their prices."""
        models = (await self.catalog.routing(token.tenant_id)).aliases.get(model)
        if models is None:
            member, channels, cost = await self._plan(token, model, embeddings=False)
            return member, [Leg(model, channels, cost)], channels, cost
        legs = []
        for name in models:
            try:
                member, channels, cost = await self._plan(token, name, embeddings=False)
            except errors.GatewayError:
                continue  # a model of the alias this key may not use or reach: the others still serve
            legs.append(Leg(name, channels, cost))
        if not legs:
            raise errors.model_not_found(model)
        every = list({channel.id: channel for leg in legs for channel in leg.channels}.values())
        # Reserved at the dearest of the models, settled at the one that answers: never an overspend. A prompt
        # token may be a cache write at one model's price: the worst prompt price counts every kind.
        worst = CallCost(
            max(leg.cost.worst_prompt_price for leg in legs), max(leg.cost.completion_price for leg in legs)
        )
        return member, legs, every, worst

    @staticmethod
    def _scopes(token: TokenInfo, member: MemberInfo) -> list[Scope]:
        """The call's spending scopes, narrowest first: the key, its user, each of their groups, the organization."""
        return [
            Scope(f"token:{token.id}", token.quota, token.rpm_limit, token.tpm_limit),
            *(Scope(budget.scope, budget.quota, budget.rpm_limit, budget.tpm_limit) for budget in member.budgets),
            Scope("tenant", token.tenant_quota),
        ]

    @staticmethod
    def _slots(token: TokenInfo, member: MemberInfo, stream: bool) -> list[tuple[Slot, str, str]]:
        """The concurrency limits the call takes a slot of, each with whose it is and what it counts."""
        slots: list[tuple[Slot, str, str]] = []
        user = member.budgets[0] if member.budgets and member.budgets[0].scope.startswith("user:") else None
        for scope, subject, max_concurrent, max_streams in (
            (f"token:{token.id}", "key", token.max_concurrent, token.max_streams),
            *([(user.scope, "user", user.max_concurrent, user.max_streams)] if user is not None else []),
        ):
            if max_concurrent:
                slots.append((Slot(f"{scope}:inflight", max_concurrent), subject, "requests"))
            if stream and max_streams:
                slots.append((Slot(f"{scope}:streams", max_streams), subject, "streams"))
        return slots

    async def _reserve(
        self,
        token: TokenInfo,
        member: MemberInfo,
        channels: list[ChannelInfo],
        cost: int,
        tokens: int,
        stream: bool = False,
    ) -> Reservation | Refusal:
        slots = self._slots(token, member, stream)
        arguments: dict[str, Any] = {
            "tenant_id": token.tenant_id,
            "scopes": self._scopes(token, member),
            "cost": cost,
            "tokens": tokens,
            "channels": [(channel.id, channel.rate_limit, channel.quota) for channel in channels],
            "slots": [slot for slot, _, _ in slots],
            "lease": str(uuid7()),
            "lease_seconds": self.settings.gateway_lease_seconds,
        }
        outcome = await self.limits.reserve(**arguments)
        if outcome is None:
            await self._load_balances(token, member)
            outcome = await self.limits.reserve(**arguments)
        if isinstance(outcome, Refusal) and outcome.reason == "concurrency":
            GATEWAY_REJECTIONS.labels("concurrency").inc()
            slot, kind, counted = slots[outcome.scope]
            subject = "this API key" if kind == "key" else "your account"
            raise errors.rate_limited(
                f"Too many concurrent {counted} for {subject} (at most {slot.limit} at once); "
                "retry when one of them has ended.",
                code="concurrency_limit_exceeded",
                retry_after=1,
                recorded={"reason": "concurrency", "scope": kind, "limit": counted},
            )
        return outcome or Refusal("quota", 0)

    async def _reserve_in_budget(
        self,
        token: TokenInfo,
        member: MemberInfo,
        channels: list[ChannelInfo],
        cost: CallCost,
        bounds: tuple[int, int, int],
        *,
        limit: int,
        choices: int,
        clampable: bool,
        stream: bool = False,
        smaller: str = "ask for fewer output tokens",
    ) -> tuple[Reservation, int]:
        """Reserve the worst case of (prompt bound, `limit` per choice, token estimate), or raise the refusal.

        `clampable` (the caller named no output limit): when a budget cannot pay for `limit`, the largest limit
        it can pay for is reserved instead, down to MIN_CLAMPED_OUTPUT_TOKENS. Returns the limit reserved.
        """
        prompt_bound, prompt_estimate, worst_case = bounds
        outcome = await self._reserve(token, member, channels, worst_case, prompt_estimate + limit * choices, stream)
        # A few tries: calls in flight may take what was left between one and the next.
        for _ in range(3):
            if not (clampable and isinstance(outcome, Refusal) and outcome.reason == "quota"):
                break
            affordable = min(cost.affordable_completion(outcome.left, prompt_bound) // choices, limit - 1)
            if affordable < MIN_CLAMPED_OUTPUT_TOKENS:
                break
            limit, worst_case = affordable, cost.of(prompt_bound, affordable * choices)
            outcome = await self._reserve(
                token, member, channels, worst_case, prompt_estimate + limit * choices, stream
            )
        if isinstance(outcome, Refusal):
            raise self._refusal_error(outcome, token, member, worst_case, clampable=clampable, smaller=smaller)
        return outcome, limit

    async def _load_balances(self, token: TokenInfo, member: MemberInfo) -> None:
        async with tenant_session(self.session_maker, token.tenant_id) as session:
            token_used = await session.scalar(select(ApiToken.used_quota).where(ApiToken.id == token.id)) or 0
            tenant_used = await session.scalar(select(Organization.used_quota)) or 0
            counted = await budgets_by_subject(session, token.user_id, member.group_ids)
        balances = {f"token:{token.id}": token_used, "tenant": tenant_used}
        for budget in member.budgets:
            row = counted.get(UUID(budget.scope.partition(":")[2]))
            balances[budget.scope] = row.used_quota if row is not None else 0
        await self.limits.load_balances(token.tenant_id, balances)

    def _refusal_error(
        self,
        refusal: Refusal,
        token: TokenInfo,
        member: MemberInfo,
        worst_case: int,
        *,
        clampable: bool,
        smaller: str,
    ) -> errors.GatewayError:
        GATEWAY_REJECTIONS.labels(refusal.reason).inc()
        if refusal.reason == "no_channel":
            return errors.GatewayError(
                503,
                "Every channel for this model is cooling down or at its limit; retry shortly.",
                error_type="service_unavailable",
                code="no_channel_available",
                headers={"Retry-After": "5"},
                recorded={"reason": "no_channel"},
            )
        scope = self._scopes(token, member)[refusal.scope].key
        names = {budget.scope: budget.name for budget in member.budgets}
        kind, subject = _subject(scope, names.get(scope, ""))
        recorded = {"scope": kind} | ({"scope_name": names[scope]} if kind == "group" else {})
        if refusal.reason in ("rpm", "tpm"):
            unit = "requests" if refusal.reason == "rpm" else "tokens"
            return errors.rate_limited(
                f"Rate limit reached: {unit} per minute for {subject}.",
                code="rate_limit_exceeded",
                retry_after=refusal.retry_after,
                recorded={"reason": refusal.reason, **recorded},
            )
        money = functools.partial(format_money, currency=member.currency)
        advice = (
            f"not even {MIN_CLAMPED_OUTPUT_TOKENS} output tokens fit"
            if clampable
            else f"this request could cost up to {money(worst_case)}; {smaller}"
        )
        return errors.quota_exhausted(
            f"The budget of {subject} has {money(refusal.left)} left: {advice}. An administrator can raise it.",
            recorded={"reason": "budget", **recorded},
        )

    async def _record_refusal(
        self,
        token: TokenInfo,
        error: errors.GatewayError,
        *,
        endpoint: str,
        model: str,
        request_id: str | None,
        started: float,
        stream: bool = False,
    ) -> None:
        """Put a refused call on the record: no cost, its status, the message the client got and why."""
        if error.status_code not in RECORDED_REFUSALS:
            return
        record = UsageRecord(
            id=str(uuid7()),
            tenant_id=str(token.tenant_id),
            user_id=str(token.user_id),
            token_id=str(token.id),
            channel_id=None,
            request_id=request_id,
            endpoint=endpoint,
            model=model[:100],
            upstream_model=None,
            prompt_tokens=0,
            completion_tokens=0,
            cost=0,
            latency_ms=int((time.perf_counter() - started) * 1000),
            upstream_latency_ms=None,
            status_code=error.status_code,
            outcome="refused",
            stream=stream,
            created_at=datetime.datetime.now(datetime.UTC),
            details={"error": error.message, **error.recorded},
        )
        try:
            await self.limits.record(token.tenant_id, msgspec.json.encode(record))
        except Exception as failure:
            # The refusal stands whether or not it could be recorded; the log says which records were lost.
            logger.warning("refused call not recorded", error=f"{type(failure).__name__}: {failure}")

    def _target(self, channel: ChannelInfo, model: str) -> Target:
        return Target(
            channel_id=str(channel.id),
            base_url=channel.base_url,
            api_key=random.choice(channel.keys),  # noqa: S311 - spreading load over keys, not a secret
            upstream_model=channel.model_mapping.get(model, model),
            api_version=channel.api_version,
        )

    async def _upstream_failed(self, token: TokenInfo, channel: ChannelInfo, error: UpstreamError) -> None:
        logger.warning("upstream failed", channel=channel.name, status=error.status, error=error.message[:300])
        if error.disables_channel:
            await self._auto_disable(token.tenant_id, channel, error.message)
        elif error.retryable:
            await self.limits.cool_down(
                token.tenant_id, channel.id, error.retry_after or self.settings.channel_cooldown_seconds
            )

    async def _auto_disable(self, tenant_id: UUID, channel: ChannelInfo, reason: str) -> None:
        async with tenant_session(self.session_maker, tenant_id) as session:
            disabled = await session.scalar(
                update(Channel)
                .where(Channel.id == channel.id, Channel.status == "enabled")
                .values(status="auto_disabled", status_reason=reason[:1000])
                .returning(Channel.id)
            )
            record_audit_event(
                session,
                actor="gateway",
                action="channel.auto_disabled",
                target_type="channel",
                target_id=channel.id,
                details={"reason": reason[:500]},
            )
            await session.commit()
        await announce_change(self.redis, self.catalog, f"tenant:{tenant_id}")
        if disabled is not None:  # this call disabled it: concurrent failures announce it once
            data = {"channel_id": str(channel.id), "name": channel.name, "reason": reason[:500]}
            await emit_event(self, tenant_id, "channel.auto_disabled", data)

    @staticmethod
    def _final_error(error: UpstreamError | None) -> errors.GatewayError:
        if error is None:
            return errors.GatewayError(
                503, "No channel could take this call.", error_type="service_unavailable", code="no_channel_available"
            )
        if not error.retryable and error.status in (400, 422):
            return errors.invalid_request(f"The provider rejected the request: {error.message}")
        if error.timed_out:
            return errors.upstream_failed(504, "The provider did not answer in time.")
        if error.status == 429:
            return errors.upstream_failed(503, "Every provider channel for this model is rate limited; retry shortly.")
        return errors.upstream_failed(502, "The provider failed to answer; the call was not billed.")

    async def _settle(
        self,
        call: CallContext,
        *,
        usage: Usage,
        channel: ChannelInfo | None,
        upstream_model: str | None,
        upstream_ms: int | None,
        status_code: int,
        outcome: str,
        details: dict[str, Any] | None = None,
        charge: int | None = None,
    ) -> int:
        """Settle at what `usage` costs, or at `charge` where the call's price is not its usage's (a cache hit)."""
        token, reservation = call.token, call.reservation
        real_cost = call.cost.billed(usage) if charge is None else charge
        billed = min(real_cost, reservation.cost)
        if real_cost > billed:
            # The provider reported more than the request allowed it to generate: the key pays what it
            # reserved, the rest is on the record (usage row, metric), never silently lost.
            GATEWAY_OVERSHOOT.labels(call.endpoint).inc(real_cost - billed)
            GATEWAY_OVERSHOT_CALLS.labels(call.endpoint).inc()
        latency_ms = int((time.perf_counter() - call.started) * 1000)
        GATEWAY_OVERHEAD.labels(call.endpoint).observe(max(latency_ms - (upstream_ms or 0), 0) / 1000)
        if channel is not None:
            self.health.ended(channel.id)
        if channel is not None and upstream_ms is not None:
            UPSTREAM_DURATION.labels(str(channel.id), outcome).observe(upstream_ms / 1000)
        record = UsageRecord(
            id=str(uuid7()),
            tenant_id=str(token.tenant_id),
            user_id=str(token.user_id),
            token_id=str(token.id),
            channel_id=str(channel.id) if channel else None,
            request_id=call.request_id,
            endpoint=call.endpoint,
            model=call.model,
            upstream_model=upstream_model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=billed,
            latency_ms=latency_ms,
            upstream_latency_ms=upstream_ms,
            status_code=status_code,
            outcome=outcome,
            stream=call.stream,
            created_at=datetime.datetime.now(datetime.UTC),
            overshoot=real_cost - billed,
            details=details or {},
            budgets=[scope for scope in reservation.scopes if scope.startswith(("user:", "group:"))],
            cached_tokens=usage.cache_counts()[0],
            cache_write_tokens=usage.cache_counts()[1],
        )
        await self.limits.settle(
            tenant_id=token.tenant_id,
            reservation=reservation,
            cost=billed,
            tokens=usage.prompt_tokens + usage.completion_tokens,
            channel_id=channel.id if channel else None,
            record=msgspec.json.encode(record),
            release=(self._channel_slot_key(call, channel),) if channel is not None and channel.max_in_flight else (),
        )
        if call.observer is not None:
            call.observer(record)
        return billed

    async def reserve_cached(
        self,
        token: TokenInfo,
        model: str,
        *,
        endpoint: str,
        stream: bool,
        charge: int,
        tokens: int,
        request_id: str | None,
    ) -> CallContext:
        """The reservation of a call answered from the response cache: the model must still be allowed, and the
        key's rate and concurrency limits and budgets still count it (at `charge`); refusals are on the record."""
        started = time.perf_counter()
        try:
            member, _, _, cost = await self._plan_models(token, model)
            outcome = await self._reserve(token, member, [CACHE_CHANNEL], charge, tokens, stream)
            if isinstance(outcome, Refusal):
                raise self._refusal_error(
                    outcome, token, member, charge, clampable=False, smaller="the cached answer costs that much"
                )
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint=endpoint, model=model, request_id=request_id, started=started, stream=stream
            )
            raise
        return CallContext(token, member, outcome, cost, endpoint, model, started, stream, request_id)

    async def settle_cached(
        self, call: CallContext, *, usage: Usage, charge: int, upstream_model: str | None, details: dict[str, Any]
    ) -> int:
        """Settle a cache hit at its charge, on the record with the original usage's tokens."""
        return await self._settle(
            call,
            usage=usage,
            channel=None,
            upstream_model=upstream_model,
            upstream_ms=None,
            status_code=200,
            outcome="cache_hit",
            details=details,
            charge=charge,
        )

    def _headers(self, model: str, channel: ChannelInfo, started: float, upstream_ms: float) -> dict[str, str]:
        overhead = max((time.perf_counter() - started) * 1000 - upstream_ms, 0.0)
        return {
            "x-lyss-model": model,
            "x-lyss-channel": channel.name,
            "x-lyss-channel-id": str(channel.id),
            "x-lyss-overhead-ms": f"{overhead:.2f}",
        }

    async def chat(
        self,
        token: TokenInfo,
        body: dict[str, Any],
        *,
        raw_size: int,
        dialect: Dialect,
        request_id: str | None,
        defer_settlement: bool = False,
        native: NativeRequest | None = None,
        observer: Callable[[UsageRecord], None] | None = None,
        turn: ResponsesTurn | None = None,
    ) -> Answer | StreamAnswer:
        """A chat call, whole or streamed. `defer_settlement`: a whole answer comes back with its settlement
        still to run (`Answer.settle`), so that the caller can send it first; the caller must then run it.

        The output limit is the largest the request names (or the default): it is what the reservation
        covers, times `n`, and exactly what the provider is sent, in the parameter its type takes. Without
        a limit named, a budget too small for the default one lowers it (down to MIN_CLAMPED_OUTPUT_TOKENS),
        and the `x-lyss-output-limit-clamped` header says to what. `turn` (the Responses dialect): the
        Response object or event stream the client gets is built from the chat answer by it.
        """
        started = time.perf_counter()
        request = chat_request(body)
        model = request.model
        endpoint = CHAT_ENDPOINTS[dialect]
        stream = bool(request.stream)
        limit = request.requested_limit or self.settings.gateway_default_max_tokens
        try:
            member, legs, channels, cost = await self._plan_models(token, model)
            # Upper bounds: a token is at least one byte of the request, plus the special tokens per message.
            media = max(request.images, native.media if native is not None else 0)
            prompt_bound = raw_size + TOKENS_PER_MESSAGE * len(request.messages) + MEDIA_PROMPT_TOKENS * media
            prompt_estimate = estimated_tokens(_text_length(body["messages"]))
            worst_case = self._worst_case(cost, prompt_bound, limit * request.choices, request.limit_parameter)
            reservation, reserved_limit = await self._reserve_in_budget(
                token,
                member,
                channels,
                cost,
                (prompt_bound, prompt_estimate, worst_case),
                limit=limit,
                choices=request.choices,
                clampable=request.requested_limit is None,
                stream=stream,
            )
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint=endpoint, model=model, request_id=request_id, started=started, stream=stream
            )
            raise
        clamped = {CLAMP_HEADER: str(reserved_limit)} if reserved_limit != limit else {}
        limit = reserved_limit
        usable = {channel.id for channel, ok in zip(channels, reservation.usable, strict=True) if ok}
        client_wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        unlimited = {name: value for name, value in body.items() if name not in LIMIT_PARAMETERS}
        if stream:
            unlimited["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        call = CallContext(token, member, reservation, cost, endpoint, model, started, stream, request_id, observer)
        routes = [
            (
                msgspec.structs.replace(call, model=leg.model, cost=leg.cost),
                [channel for channel in leg.channels if channel.id in usable],
            )
            for leg in legs
        ]

        def upstream(channel: ChannelInfo, target: Target) -> tuple[dict[str, Any], dict[str, Any] | None]:
            """The request for this channel, and the client's own if the channel speaks its format."""
            sent = {**unlimited, "model": target.upstream_model, channel.output_limit_parameter: limit}
            same_format = native is not None and (
                native.api_format == channel.api_format
                or (native.api_format == "responses" and channel.serves_responses)
            )
            return sent, native.body if same_format and native is not None else None

        if stream:

            async def open_stream(channel: ChannelInfo, target: Target) -> tuple[Chunk, AsyncGenerator[Chunk, None]]:
                sent, own = upstream(channel, target)
                chunks = cast(
                    AsyncGenerator[Chunk, None],
                    ADAPTERS[channel.api_format].stream(self.http, target, sent, self.timeouts, own),
                )
                try:
                    return await anext(chunks), chunks
                except StopAsyncIteration:
                    raise UpstreamError("the provider closed the stream without a chunk", status=502) from None

            served, channel, target, (first, chunks), upstream_elapsed_ms, details = await self._call_through_models(
                call, routes, open_stream
            )
            relay = self._relay(
                first,
                chunks,
                channel=channel,
                target=target,
                dialect=dialect,
                turn=turn,
                client_wants_usage=client_wants_usage,
                prompt_estimate=prompt_estimate,
                call_started=time.perf_counter() - upstream_elapsed_ms / 1000,
                settle=served,
                details=details,
            )
            headers = self._headers(served.model, channel, started, upstream_elapsed_ms) | clamped
            return StreamAnswer(chunks=relay, headers=headers)

        async def complete(channel: ChannelInfo, target: Target) -> Completion:
            sent, own = upstream(channel, target)
            return await ADAPTERS[channel.api_format].complete(self.http, target, sent, self.timeouts, own)

        served, channel, target, completion, upstream_elapsed_ms, details = await self._call_through_models(
            call, routes, complete
        )
        usage = completion.usage or Usage(
            prompt_estimate, estimated_tokens(_text_length(completion.body.get("choices")))
        )
        settle = functools.partial(
            self._settle,
            served,
            usage=usage,
            channel=channel,
            upstream_model=target.upstream_model,
            upstream_ms=int(upstream_elapsed_ms),
            status_code=200,
            outcome="ok",
            details=details,
        )
        if turn is not None and completion.native is not None:
            answer = turn.passed_through(completion.native)
        elif turn is not None:
            answer = turn.answer(completion.body, served.model, usage)
        elif dialect == "openai":
            answer = completion.body
        else:
            answer = completion.native or to_anthropic_response(completion.body, model, usage)
        headers = self._headers(served.model, channel, started, upstream_elapsed_ms) | clamped
        return await self._answer(answer, headers, settle, defer_settlement)

    @staticmethod
    async def _answer(
        body: dict[str, Any], headers: dict[str, str], settle: Callable[[], Awaitable[int]], defer_settlement: bool
    ) -> Answer:
        encoded = msgspec.json.encode(body)
        if defer_settlement:
            return Answer(body=encoded, headers=headers, settle=settle)
        await settle()
        return Answer(body=encoded, headers=headers)

    async def _call_with_failover(
        self, call: CallContext, usable: list[ChannelInfo], attempt: Callable[[ChannelInfo, Target], Awaitable[T]]
    ) -> tuple[ChannelInfo, Target, T, float, dict[str, Any]]:
        """`_call_through_models` for a call with one model."""
        _, channel, target, answer, elapsed_ms, details = await self._call_through_models(
            call, [(call, usable)], attempt
        )
        return channel, target, answer, elapsed_ms, details

    async def _call_through_models(
        self,
        call: CallContext,
        routes: list[tuple[CallContext, list[ChannelInfo]]],
        attempt: Callable[[ChannelInfo, Target], Awaitable[T]],
    ) -> tuple[CallContext, ChannelInfo, Target, T, float, dict[str, Any]]:
        """Try each model's channels in its routing order until one answers, moving to the next model (an
        alias's) when every channel of one has failed: (the call as the model that answered settles it, the
        channel, target, answer, its milliseconds, the usage record's details: the alias asked for, and each
        attempt if there was more than one).

        If none does, or a failure no other channel would avoid (the request itself was refused), the
        reservation is released (settled at zero, logged as an upstream error with every attempt and the
        provider's messages) and the client gets the error that fits the last failure.
        """
        last_error: UpstreamError | None = None
        attempts: list[dict[str, Any]] = []
        aliased = routes[0][0].model != call.model
        routing = await self.catalog.routing(call.token.tenant_id)
        for served, usable in routes:
            model = served.model if aliased else None
            order = attempt_order(usable, strategy=routing.strategy(served.model), health=self.health)
            order = order[: self.max_attempts]
            limited = any(channel.max_in_flight for channel in order)
            while order:
                try:
                    channel = await self._take_channel(served, order) if limited else order.pop(0)
                except asyncio.CancelledError:
                    with anyio.CancelScope(shield=True):
                        await self._release_slots(served, None)
                    raise
                target = self._target(channel, served.model)
                attempt_started = time.perf_counter()
                self.health.started(channel.id)
                try:
                    answer = await attempt(channel, target)
                except UpstreamError as error:
                    self.health.ended(channel.id)
                    if channel.max_in_flight:
                        await self.limits.release([self._channel_slot_key(served, channel)], served.reservation.lease)
                    last_error = error
                    attempts.append(_attempt(channel, error.status, attempt_started, error.message, model))
                    await self._upstream_failed(served.token, channel, error)
                    if not error.retryable:
                        break
                    continue
                except BaseException:
                    # Cancelled (the client left) or broken: nothing will settle this call, so its slots go back now.
                    self.health.ended(channel.id)
                    with anyio.CancelScope(shield=True):
                        await self._release_slots(served, channel)
                    raise
                elapsed_ms = (time.perf_counter() - attempt_started) * 1000
                self.health.answered(channel.id, elapsed_ms)
                if attempts:
                    attempts.append(_attempt(channel, 200, attempt_started, model=model))
                details: dict[str, Any] = {"alias": call.model} if aliased else {}
                if attempts:
                    details["attempts"] = attempts
                return served, channel, target, answer, elapsed_ms, details
            if last_error is not None and not last_error.retryable:
                break
        failure = self._final_error(last_error)
        await self._settle(
            call,
            usage=Usage(),
            channel=None,
            upstream_model=None,
            upstream_ms=None,
            status_code=failure.status_code,
            outcome="upstream_error",
            details={"error": failure.message, "reason": failure.recorded["reason"], "attempts": attempts},
        )
        raise failure

    @staticmethod
    def _channel_slot_key(call: CallContext, channel: ChannelInfo) -> str:
        return lease_key(call.token.tenant_id, f"channel:{channel.id}:inflight")

    async def _release_slots(self, call: CallContext, channel: ChannelInfo | None) -> None:
        slots = list(call.reservation.slots)
        if channel is not None and channel.max_in_flight:
            slots.append(self._channel_slot_key(call, channel))
        try:
            await self.limits.release(slots, call.reservation.lease)
        except Exception as failure:
            # The leases run out on their own; the log says why they were held that long.
            logger.warning("slots not released", error=f"{type(failure).__name__}: {failure}")

    async def _take_channel(self, call: CallContext, order: list[ChannelInfo]) -> ChannelInfo:
        """The first channel in routing order with a slot free, taken out of `order`.

        When every one is full, the call waits among the first one's waiters (at most
        LYSS_GATEWAY_QUEUE_LIMIT of them) for at most LYSS_GATEWAY_QUEUE_SECONDS, looking at every channel
        again as it waits; then it is refused with 429 (settled at zero, on the record).
        """
        settings = self.settings
        tenant_id, lease = call.token.tenant_id, call.reservation.lease
        deadline = time.monotonic() + settings.gateway_queue_seconds
        queue: ChannelInfo | None = None
        while True:
            for channel in order:
                if not channel.max_in_flight:
                    order.remove(channel)
                    return channel
                wait = channel is queue or (queue is None and channel is order[0] and time.monotonic() < deadline)
                taken = await self.limits.take_channel_slot(
                    tenant_id,
                    channel.id,
                    limit=channel.max_in_flight,
                    lease=lease,
                    lease_seconds=settings.gateway_lease_seconds,
                    wait=wait and settings.gateway_queue_limit > 0 and settings.gateway_queue_seconds > 0,
                    queue_limit=settings.gateway_queue_limit,
                    wait_seconds=settings.gateway_queue_seconds,
                )
                if taken == 1:
                    if queue is not None and queue is not channel:
                        await self.limits.release([lease_key(tenant_id, f"channel:{queue.id}:waiting")], lease)
                    order.remove(channel)
                    return channel
                if wait and taken == 0:
                    queue = channel
            if queue is None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(QUEUE_POLL_SECONDS * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not a secret
        if queue is not None:
            await self.limits.release([lease_key(tenant_id, f"channel:{queue.id}:waiting")], lease)
        GATEWAY_REJECTIONS.labels("channel_busy").inc()
        waited = "" if queue is None else f" after waiting {settings.gateway_queue_seconds:g} s"
        error = errors.rate_limited(
            f"Every channel for this model is at its limit of calls in flight{waited}; retry shortly.",
            code="channel_busy",
            retry_after=max(1, int(settings.gateway_queue_seconds)),
            recorded={"reason": "concurrency", "scope": "channel"},
        )
        await self._settle(
            call,
            usage=Usage(),
            channel=None,
            upstream_model=None,
            upstream_ms=None,
            status_code=429,
            outcome="refused",
            details={"error": error.message, **error.recorded},
        )
        raise error

    def _renew_leases(self, call: CallContext, channel: ChannelInfo) -> asyncio.Task[None] | None:
        """A stream outlives a lease: while it runs, its slots' leases are renewed (a third of the way in)."""
        slots = list(call.reservation.slots)
        if channel.max_in_flight:
            slots.append(self._channel_slot_key(call, channel))
        if not slots:
            return None
        seconds = self.settings.gateway_lease_seconds

        async def renew() -> None:
            while True:
                await asyncio.sleep(seconds / 3)
                try:
                    await self.limits.renew(slots, call.reservation.lease, seconds)
                except Exception as failure:
                    logger.warning("lease not renewed", error=f"{type(failure).__name__}: {failure}")

        return asyncio.create_task(renew())

    async def _relay(
        self,
        first: Chunk,
        rest: AsyncGenerator[Chunk, None],
        *,
        channel: ChannelInfo,
        target: Target,
        dialect: Dialect,
        turn: ResponsesTurn | None,
        client_wants_usage: bool,
        prompt_estimate: int,
        call_started: float,
        settle: CallContext,
        details: dict[str, Any],
    ) -> AsyncIterator[bytes]:
        """Pass the stream on; whatever ends it (done, provider cut, client gone), bill what was delivered."""
        writer: AnthropicStreamWriter | ResponsesStreamWriter | None = None
        if turn is not None:
            writer = turn.stream_writer(settle.model, prompt_estimate)
        elif dialect == "anthropic":
            writer = AnthropicStreamWriter(settle.model, prompt_estimate)
        delivered = 0
        usage: Usage | None = None
        outcome = "ok"
        # The provider's own events went through as they were: it sent its own closing events too.
        passed_through = False

        pending: Chunk | None = first
        renewal = self._renew_leases(settle, channel)
        try:
            while True:
                if pending is not None:
                    chunk, pending = pending, None
                else:
                    try:
                        chunk = await anext(rest)
                    except StopAsyncIteration:
                        break
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.native is not None:
                    payload, passed_through = chunk.native, True
                    if isinstance(writer, ResponsesStreamWriter):
                        payload = writer.passed_through(payload)
                elif writer is not None:
                    payload = writer.write(chunk.raw) if not chunk.usage_only else b""
                elif chunk.usage_only and not client_wants_usage:
                    payload = b""  # asked for on the client's behalf, for billing only
                else:
                    payload = b"data: " + chunk.raw + b"\n\n"
                if payload:
                    yield payload
                delivered += chunk.tokens
            if writer is None:
                yield b"data: [DONE]\n\n"
            elif not passed_through:
                yield writer.finish_events(usage)
        except UpstreamError as error:
            outcome = "upstream_cut"
            logger.warning("upstream stream cut", channel=channel.name, error=error.message[:300])
            message = "The provider's stream broke off; what was received has been delivered."
            if writer is not None:
                yield writer.error_event(message)
            else:
                yield b"data: " + errors.upstream_failed(502, message).encoded() + b"\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "client_disconnected"
            raise
        finally:
            if renewal is not None:
                renewal.cancel()
            with anyio.CancelScope(shield=True):
                await rest.aclose()
                if outcome == "ok" and usage is not None:
                    billed_usage = usage
                else:
                    # Cut short: bill the prompt and what actually reached the client, not what was planned.
                    if usage is not None:
                        billed_usage = msgspec.structs.replace(usage, completion_tokens=delivered)
                    else:
                        billed_usage = Usage(prompt_estimate, delivered)
                await self._settle(
                    settle,
                    usage=billed_usage,
                    channel=channel,
                    upstream_model=target.upstream_model,
                    upstream_ms=int((time.perf_counter() - call_started) * 1000),
                    status_code=200,
                    outcome=outcome,
                    details=details,
                )

    async def count_tokens(
        self, token: TokenInfo, body: dict[str, Any], request: CountTokensRequest, raw_size: int
    ) -> Answer:
        """`/v1/messages/count_tokens`: counted by an Anthropic channel serving the model, else estimated.

        Free, as at Anthropic: nothing is reserved or billed. The `x-lyss-token-count` header says which.
        """
        model = request.model
        _, channels, _ = await self._plan(token, model, embeddings=False)
        counters = [channel for channel in channels if channel.api_format == "anthropic"]
        for channel in attempt_order(counters)[: self.max_attempts]:
            adapter = ADAPTERS[channel.api_format]
            assert isinstance(adapter, AnthropicAdapter)
            target = self._target(channel, model)
            try:
                counted = await adapter.count_tokens(self.http, target, body, self.timeouts)
            except UpstreamError as error:
                await self._upstream_failed(token, channel, error)
                if not error.retryable:
                    raise self._final_error(error) from None
                continue
            headers = {COUNTED_BY_HEADER: "provider", "x-lyss-channel": channel.name}
            return Answer(body=msgspec.json.encode(counted), headers=headers)
        estimate = {"input_tokens": estimated_input_tokens(request, raw_size)}
        return Answer(body=msgspec.json.encode(estimate), headers={COUNTED_BY_HEADER: "estimate"})

    async def embeddings(
        self,
        token: TokenInfo,
        body: dict[str, Any],
        *,
        raw_size: int,
        request_id: str | None,
        defer_settlement: bool = False,
    ) -> Answer:
        started = time.perf_counter()
        request = embeddings_request(body)
        model = request.model
        try:
            member, channels, cost = await self._plan(token, model, embeddings=True)
            # Every token is at least one byte of the request (a token id at least two: digits and a comma).
            prompt_estimate = _embeddings_estimate(request.input)
            worst_case = self._worst_case(cost, raw_size, 0, "input")
            reservation, _ = await self._reserve_in_budget(
                token,
                member,
                channels,
                cost,
                (raw_size, prompt_estimate, worst_case),
                limit=0,
                choices=1,
                clampable=False,
                smaller="send fewer or shorter inputs",
            )
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint="embeddings", model=model, request_id=request_id, started=started
            )
            raise
        usable = [channel for channel, ok in zip(channels, reservation.usable, strict=True) if ok]
        call = CallContext(token, member, reservation, cost, "embeddings", model, started, False, request_id)

        async def embed(channel: ChannelInfo, target: Target) -> Completion:
            return await ADAPTERS[channel.api_format].embed(
                self.http, target, {**body, "model": target.upstream_model}, self.timeouts
            )

        channel, target, completion, upstream_elapsed_ms, details = await self._call_with_failover(call, usable, embed)
        usage = completion.usage or Usage(prompt_estimate, 0)
        settle = functools.partial(
            self._settle,
            call,
            usage=Usage(usage.prompt_tokens, 0),
            channel=channel,
            upstream_model=target.upstream_model,
            upstream_ms=int(upstream_elapsed_ms),
            status_code=200,
            outcome="ok",
            details=details,
        )
        headers = self._headers(model, channel, started, upstream_elapsed_ms)
        return await self._answer(completion.body, headers, settle, defer_settlement)

    async def rerank(
        self,
        token: TokenInfo,
        body: dict[str, Any],
        *,
        raw_size: int,
        request_id: str | None,
        defer_settlement: bool = False,
    ) -> Answer:
        """`/v1/rerank`, priced per token (the model's prompt price) and per search unit (its completion
        price, per million units): the usage record's `completion_tokens` are the search units billed."""
        started = time.perf_counter()
        request = rerank_request(body, self.settings.gateway_rerank_max_documents)
        model = request.model
        try:
            member, channels, cost = await self._plan(token, model, embeddings=False, rerank=True)
            prompt_estimate = sum(estimated_tokens(len(request.query) + len(text)) for text in request.texts)
            worst_case = self._worst_case(
                cost, request.prompt_bound(raw_size), request.search_units_bound(raw_size), "documents"
            )
            reservation, _ = await self._reserve_in_budget(
                token,
                member,
                channels,
                cost,
                (request.prompt_bound(raw_size), prompt_estimate, worst_case),
                limit=0,
                choices=1,
                clampable=False,
                smaller="send fewer or shorter documents",
            )
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint="rerank", model=model, request_id=request_id, started=started
            )
            raise
        usable = [channel for channel, ok in zip(channels, reservation.usable, strict=True) if ok]
        call = CallContext(token, member, reservation, cost, "rerank", model, started, False, request_id)

        async def rank(channel: ChannelInfo, target: Target) -> Ranked:
            answer = await ADAPTERS[channel.api_format].rerank(
                self.http, target, upstream_body(body, request, target.upstream_model), self.timeouts
            )
            return ranked_answer(answer, request, model)

        channel, target, result, upstream_elapsed_ms, details = await self._call_with_failover(call, usable, rank)
        tokens = result.tokens if result.tokens is not None else prompt_estimate
        units = result.search_units if result.search_units is not None else request.search_units
        settle = functools.partial(
            self._settle,
            call,
            usage=Usage(tokens, units),
            channel=channel,
            upstream_model=target.upstream_model,
            upstream_ms=int(upstream_elapsed_ms),
            status_code=200,
            outcome="ok",
            details={**details, "search_units": units, "documents": len(request.documents)},
        )
        answer = {
            **result.body,
            "usage": {"total_tokens": tokens},
            "meta": {"billed_units": {"search_units": units}},
        }
        headers = self._headers(model, channel, started, upstream_elapsed_ms)
        return await self._answer(answer, headers, settle, defer_settlement)

    # --- endpoints billed per unit: images, moderation, speech ---------------------------------------

    async def _unit_call(
        self,
        token: TokenInfo,
        *,
        endpoint: str,
        model: str,
        unit: UnitPrice,
        units_bound: int,
        request_id: str | None,
        param: str,
        smaller: str,
        attempt: Callable[[ChannelInfo, Target], Awaitable[T]],
        per_million_units: bool = False,
        units_per_price: int = 1,
    ) -> tuple[CallContext, ChannelInfo, Target, T, float, dict[str, Any]]:
        """Plan, reserve `units_bound` units at the model's unit price, and call with failover, as `embeddings`
        does. The price is a CallCost whose completion price is the unit price per million units (the price as
        it is where it is already per million: characters spoken; `units_per_price` units make the priced one:
        milliseconds of a price per second), so that the reservation, settlement (`Usage(0, units)`, rounded up
        to a whole credit) and overshoot rules are the token calls' own."""
        started = time.perf_counter()
        try:
            member, channels, _ = await self._plan(token, model, embeddings=False, media=True)
            price = (await self.catalog.prices(token.tenant_id)).unit_price(model, unit)
            if price is None:
                error = errors.permission_denied(
                    f"The model '{errors.shown(model)}' has no {UNIT_NAMES[unit]} in your organization; an "
                    "administrator can set one under Prices.",
                    code="model_not_priced",
                )
                error.recorded.update(reason="unpriced")
                raise error
            cost = CallCost(0, price if per_million_units else price * 1_000_000 // units_per_price)
            worst_case = self._worst_case(cost, 0, units_bound, param)
            reservation, _ = await self._reserve_in_budget(
                token,
                member,
                channels,
                cost,
                (0, 0, worst_case),
                limit=units_bound,
                choices=1,
                clampable=False,
                smaller=smaller,
            )
        except errors.GatewayError as error:
            await self._record_refusal(
                token, error, endpoint=endpoint, model=model, request_id=request_id, started=started
            )
            raise
        usable = [channel for channel, ok in zip(channels, reservation.usable, strict=True) if ok]
        call = CallContext(token, member, reservation, cost, endpoint, model, started, False, request_id)
        channel, target, answer, upstream_elapsed_ms, details = await self._call_with_failover(call, usable, attempt)
        return call, channel, target, answer, upstream_elapsed_ms, details

    def _settle_units(
        self,
        call: CallContext,
        channel: ChannelInfo,
        target: Target,
        upstream_elapsed_ms: float,
        units: int,
        details: dict[str, Any],
    ) -> Callable[[], Awaitable[int]]:
        """The settlement of a unit-priced call: the units are the usage record's `completion_tokens`."""
        return functools.partial(
            self._settle,
            call,
            usage=Usage(0, units),
            channel=channel,
            upstream_model=target.upstream_model,
            upstream_ms=int(upstream_elapsed_ms),
            status_code=200,
            outcome="ok",
            details=details,
        )

    async def images(
        self, token: TokenInfo, body: dict[str, Any], *, request_id: str | None, defer_settlement: bool = False
    ) -> Answer:
        """`/v1/images/generations`: `n` images reserved, the images returned billed."""
        request = image_request(body)

        async def generate(channel: ChannelInfo, target: Target) -> tuple[dict[str, Any], int]:
            answer = await ADAPTERS[channel.api_format].generate_images(
                self.http, target, {**body, "model": target.upstream_model}, self.timeouts
            )
            return answer, images_returned(answer, request.n)

        call, channel, target, (answer, images), elapsed, details = await self._unit_call(
            token,
            endpoint="images",
            model=request.model,
            unit="image_price",
            units_bound=request.n,
            request_id=request_id,
            param="n",
            smaller="ask for fewer images",
            attempt=generate,
        )
        settle = self._settle_units(call, channel, target, elapsed, images, {**details, "images": images})
        headers = self._headers(request.model, channel, call.started, elapsed)
        return await self._answer(answer, headers, settle, defer_settlement)

    async def moderations(
        self, token: TokenInfo, body: dict[str, Any], *, request_id: str | None, defer_settlement: bool = False
    ) -> Answer:
        """`/v1/moderations`: one request at the model's price per request."""
        request = moderation_request(body)

        async def moderate(channel: ChannelInfo, target: Target) -> dict[str, Any]:
            answer = await ADAPTERS[channel.api_format].moderate(
                self.http, target, {**body, "model": target.upstream_model}, self.timeouts
            )
            return moderation_checked(answer)

        call, channel, target, answer, elapsed, details = await self._unit_call(
            token,
            endpoint="moderations",
            model=request.model,
            unit="request_price",
            units_bound=1,
            request_id=request_id,
            param="model",
            smaller="ask an administrator to raise it",
            attempt=moderate,
        )
        inputs = len(request.input) if isinstance(request.input, list) else 1
        settle = self._settle_units(call, channel, target, elapsed, 1, {**details, "requests": 1, "inputs": inputs})
        headers = self._headers(request.model, channel, call.started, elapsed)
        return await self._answer(
            {**answer, "model": answer.get("model", request.model)}, headers, settle, defer_settlement
        )

    async def speech(
        self, token: TokenInfo, body: dict[str, Any], *, request_id: str | None, defer_settlement: bool = False
    ) -> Answer:
        """`/v1/audio/speech`: billed per character of `input` (the price is per million characters); the answer
        is the provider's audio with its content type."""
        request = speech_request(body)
        characters = len(request.input)

        async def speak(channel: ChannelInfo, target: Target) -> tuple[bytes, str]:
            return await ADAPTERS[channel.api_format].speak(
                self.http, target, {**body, "model": target.upstream_model}, self.timeouts
            )

        call, channel, target, (audio, content_type), elapsed, details = await self._unit_call(
            token,
            endpoint="speech",
            model=request.model,
            unit="speech_price",
            units_bound=characters,
            request_id=request_id,
            param="input",
            smaller="send a shorter input",
            attempt=speak,
            per_million_units=True,
        )
        settle = self._settle_units(call, channel, target, elapsed, characters, {**details, "characters": characters})
        headers = self._headers(request.model, channel, call.started, elapsed)
        if defer_settlement:
            return Answer(body=audio, headers=headers, settle=settle, content_type=content_type)
        await settle()
        return Answer(body=audio, headers=headers, content_type=content_type)

    async def transcriptions(
        self, token: TokenInfo, upload: Upload, *, request_id: str | None, defer_settlement: bool = False
    ) -> Answer:
        """`/v1/audio/transcriptions`: the longest the file plays (demuxed) reserved at the price per second, the
        duration the provider reports billed (never more; the measured one where it reports none); the answer is
        the provider's, in its content type."""
        reserved_ms = await heard_duration_ms(upload.file)

        async def transcribe(channel: ChannelInfo, target: Target) -> tuple[bytes, str]:
            fields = [(name, target.upstream_model if name == "model" else value) for name, value in upload.fields]
            return await ADAPTERS[channel.api_format].transcribe(
                self.http, target, fields, (upload.filename, upload.file_type, upload.file), self.timeouts
            )

        call, channel, target, (text, content_type), elapsed, details = await self._unit_call(
            token,
            endpoint="transcriptions",
            model=upload.model,
            unit="audio_second_price",
            units_bound=reserved_ms,
            request_id=request_id,
            param="file",
            smaller="send a shorter recording",
            attempt=transcribe,
            units_per_price=TRANSCRIBED_UNITS_PER_SECOND,
        )
        billed_ms = billed_duration_ms(text, content_type, reserved_ms)
        recorded = {**details, "audio_ms": billed_ms, "reserved_audio_ms": reserved_ms}
        settle = self._settle_units(call, channel, target, elapsed, billed_ms, recorded)
        headers = self._headers(upload.model, channel, call.started, elapsed)
        if defer_settlement:
            return Answer(body=text, headers=headers, settle=settle, content_type=content_type)
        await settle()
        return Answer(body=text, headers=headers, content_type=content_type)
