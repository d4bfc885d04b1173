"""What the hot path reads, cached in process: tokens by key hash, a tenant's channels, prices, model aliases
and routing strategies, and each user's groups and budgets.

Entries live `LYSS_GATEWAY_CACHE_SECONDS`; a change made through the API is announced on a Redis channel
so every worker drops its copy at once (a revoked token stops working everywhere, not in 30 s).
Concurrent misses for one key share a single load.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Literal, TypeVar
from uuid import UUID

import msgspec
from cachetools import TTLCache
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import DecryptionError, SecretBox, secret_context
from app.gateway.price_list import PriceList, price_list
from app.gateway.schemas import ResponseCacheSettings
from app.observability.logging import get_logger
from app.redis_client import as_cluster
from app.tenants.money import DEFAULT_CURRENCY
from app.tenants.services import budgets_by_subject, group_names_of_user
from db.provider import Channel, ModelAlias, ModelPrice, ModelRouting, ProviderType
from db.session import tenant_session
from db.tenant import Budget, Organization

INVALIDATION_CHANNEL = "lyss:gw:invalidate"
T = TypeVar("T")
logger = get_logger("lyss.gateway")


class TokenInfo(msgspec.Struct, frozen=True):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    # The key and its owner are active; the organization's state is apart, for its own refusal (403).
    usable: bool
    tenant_active: bool
    expires_at: datetime.datetime | None
    quota: int
    rpm_limit: int
    tpm_limit: int
    allowed_models: frozenset[str]
    allowed_channels: frozenset[UUID]
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    tenant_quota: int
    # Requests, and streams, in flight at once (0: no limit).
    max_concurrent: int = 0
    max_streams: int = 0
    # The response cache for this key's calls: `inherit` (its organization's setting), `on` or `off`.
    response_cache: str = "inherit"


class ChannelInfo(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    api_format: str
    # `max_tokens` or `max_completion_tokens`: where the provider takes the reserved output limit.
    output_limit_parameter: str
    base_url: str
    api_version: str | None
    keys: tuple[str, ...]
    priority: int
    weight: int
    models: frozenset[str]
    model_mapping: dict[str, str]
    scope: str
    owner_id: UUID | None
    group_id: UUID | None
    rate_limit: int
    quota: int
    # Calls in flight at once, across every worker (0: no limit).
    max_in_flight: int = 0
    # The provider serves the Responses API itself: a /v1/responses call is sent to it as it came.
    serves_responses: bool = False


class BudgetInfo(msgspec.Struct, frozen=True):
    """A user's or group's bound on spending: `scope` names its counters (`user:<id>`, `group:<id>`)."""

    scope: str
    name: str
    quota: int
    rpm_limit: int
    tpm_limit: int
    allowed_models: frozenset[str]
    # A user's requests, and streams, in flight at once (0: no limit); a group's are not applied.
    max_concurrent: int = 0
    max_streams: int = 0


class MemberInfo(msgspec.Struct, frozen=True):
    """A key's owner as the gateway sees them: their groups, the budgets that bound them (their own first,
    then one per group), and the currency those budgets are counted in."""

    group_ids: frozenset[UUID]
    budgets: tuple[BudgetInfo, ...]
    currency: str


class ModelCost(msgspec.Struct, frozen=True):
    """Credits per million tokens; a cached-prompt or cache-write price of None is the prompt price. The unit
    prices (`UNIT_PRICES`) of the endpoints not billed by the token; None: not priced for that endpoint."""

    prompt_price: int
    completion_price: int
    cached_prompt_price: int | None = None
    cache_write_price: int | None = None
    image_price: int | None = None
    audio_second_price: int | None = None
    speech_price: int | None = None
    request_price: int | None = None


FREE = ModelCost(0, 0)
# The per-unit prices: per image, per second of audio transcribed, per million characters spoken, per request.
UnitPrice = Literal["image_price", "audio_second_price", "speech_price", "request_price"]
UNIT_PRICES: tuple[UnitPrice, ...] = ("image_price", "audio_second_price", "speech_price", "request_price")


class TenantPrices(msgspec.Struct, frozen=True):
    """A tenant's prices and whether the built-in list (in US dollars) applies to it: resolved per call with
    dict lookups only."""

    own: dict[str, ModelCost]
    # The list where the tenant counts in its currency, else None.
    listed: PriceList | None

    def of(self, model: str) -> ModelCost:
        """The tenant's price for the model, else the built-in list's, else the tenant's `*`, else free."""
        own = self.own.get(model)
        if own is not None:
            return own
        if self.listed is not None:
            entry = self.listed.find(model)
            if entry is not None:
                return ModelCost(
                    entry.prompt_price, entry.completion_price, entry.cached_prompt_price, entry.cache_write_price
                )
        return self.own.get("*", FREE)

    def unit_price(self, model: str, unit: UnitPrice) -> int | None:
        """The model's price per unit: the organization's for the model, else its `*` one's, else None (the
        built-in list has no unit prices). Unlike a token price there is no free default: an image generated
        at no price would be a cost nobody pays, so the endpoint refuses the model instead."""
        for name in (model, "*"):
            own = self.own.get(name)
            price: int | None = getattr(own, unit) if own is not None else None
            if price is not None:
                return price
        return None


class TenantRouting(msgspec.Struct, frozen=True):
    """A tenant's model aliases (name -> the models tried in turn) and the models routed other than by priority."""

    aliases: dict[str, tuple[str, ...]]
    strategies: dict[str, str]

    def strategy(self, model: str) -> str:
        return self.strategies.get(model, "priority")


def channel_keys_context(tenant_id: UUID) -> str:
    return secret_context("provider_channels", "encrypted_keys", tenant_id)


class GatewayCatalog:
    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        secret_box: SecretBox,
        ttl_seconds: float,
        echo_enabled: bool,
    ) -> None:
        self.session_maker = session_maker
        self.secret_box = secret_box
        self.echo_enabled = echo_enabled
        size = 10_000
        self._tokens: TTLCache[str, TokenInfo | None] = TTLCache(size, ttl_seconds)
        self._channels: TTLCache[UUID, list[ChannelInfo]] = TTLCache(size, ttl_seconds)
        self._prices: TTLCache[UUID, TenantPrices] = TTLCache(size, ttl_seconds)
        self._members: TTLCache[tuple[UUID, UUID], MemberInfo] = TTLCache(size, ttl_seconds)
        self._routing: TTLCache[UUID, TenantRouting] = TTLCache(size, ttl_seconds)
        self._response_cache: TTLCache[UUID, ResponseCacheSettings] = TTLCache(size, ttl_seconds)
        self._loading: dict[Hashable, asyncio.Future[Any]] = {}

    async def _cached(self, cache: TTLCache[Any, T], key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if key in cache:
            return cache[key]
        pending = self._loading.get((id(cache), key))
        if pending is not None:
            return await pending  # type: ignore[no-any-return]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[(id(cache), key)] = future
        try:
            value = await load()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        else:
            cache[key] = value
            future.set_result(value)
            return value
        finally:
            del self._loading[(id(cache), key)]

    async def token(self, key_hash: str) -> TokenInfo | None:
        return await self._cached(self._tokens, key_hash, lambda: self._load_token(key_hash))

    async def _load_token(self, key_hash: str) -> TokenInfo | None:
        async with self.session_maker() as session:
            row = (
                await session.execute(text("SELECT * FROM gateway_token_lookup(:hash)"), {"hash": key_hash})
            ).one_or_none()
        if row is None:
            return None
        return TokenInfo(
            id=row.id,
            tenant_id=row.tenant_id,
            user_id=row.user_id,
            usable=row.status == "active" and row.user_active,
            tenant_active=row.tenant_active,
            expires_at=row.expires_at,
            quota=row.quota,
            rpm_limit=row.rpm_limit,
            tpm_limit=row.tpm_limit,
            allowed_models=frozenset(row.allowed_models or []),
            allowed_channels=frozenset(UUID(value) for value in row.allowed_channels or []),
            allowed_networks=tuple(ipaddress.ip_network(value, strict=False) for value in row.allowed_ips or []),
            tenant_quota=row.tenant_quota,
            max_concurrent=row.max_concurrent,
            max_streams=row.max_streams,
            response_cache=row.response_cache,
        )

    async def channels(self, tenant_id: UUID) -> list[ChannelInfo]:
        return await self._cached(self._channels, tenant_id, lambda: self._load_channels(tenant_id))

    async def _load_channels(self, tenant_id: UUID) -> list[ChannelInfo]:
        async with tenant_session(self.session_maker, tenant_id) as session:
            rows = (
                await session.execute(
                    select(
                        Channel,
                        ProviderType.api_format,
                        ProviderType.output_limit_parameter,
                        ProviderType.base_url,
                        ProviderType.serves_responses,
                    )
                    .join(ProviderType, ProviderType.id == Channel.type_id)
                    .where(Channel.status == "enabled")
                )
            ).all()
        channels = []
        for channel, api_format, output_limit_parameter, default_base_url, serves_responses in rows:
            if api_format == "echo" and not self.echo_enabled:
                continue
            try:
                keys = msgspec.json.decode(
                    self.secret_box.decrypt(channel.encrypted_keys, context=channel_keys_context(tenant_id))
                )
            except (DecryptionError, msgspec.DecodeError) as error:
                # One channel whose keys this process cannot read (another LYSS_ENCRYPTION_KEYS, a damaged
                # value) is left out of routing; the tenant's other channels keep serving.
                logger.error("channel keys unreadable", channel_id=str(channel.id), error=str(error))
                continue
            channels.append(
                ChannelInfo(
                    id=channel.id,
                    name=channel.name,
                    api_format=api_format,
                    output_limit_parameter=output_limit_parameter,
                    serves_responses=serves_responses,
                    base_url=channel.base_url or default_base_url or "",
                    api_version=channel.api_version,
                    keys=tuple(keys) or ("",),
                    priority=channel.priority,
                    weight=channel.weight,
                    models=frozenset(channel.models),
                    model_mapping=dict(channel.model_mapping),
                    scope=channel.config_scope,
                    owner_id=channel.owner_id,
                    group_id=channel.group_id,
                    rate_limit=channel.rate_limit,
                    quota=channel.quota,
                    max_in_flight=channel.max_in_flight,
                )
            )
        return channels

    async def prices(self, tenant_id: UUID) -> TenantPrices:
        return await self._cached(self._prices, tenant_id, lambda: self._load_prices(tenant_id))

    async def _load_prices(self, tenant_id: UUID) -> TenantPrices:
        async with tenant_session(self.session_maker, tenant_id) as session:
            rows = (await session.scalars(select(ModelPrice))).all()
            currency = await session.scalar(select(Organization.currency).where(Organization.id == tenant_id))
        listed = price_list()
        return TenantPrices(
            own={
                row.model: ModelCost(
                    row.prompt_price,
                    row.completion_price,
                    row.cached_prompt_price,
                    row.cache_write_price,
                    **{unit: getattr(row, unit) for unit in UNIT_PRICES},
                )
                for row in rows
            },
            listed=listed if currency == listed.currency else None,
        )

    async def routing(self, tenant_id: UUID) -> TenantRouting:
        return await self._cached(self._routing, tenant_id, lambda: self._load_routing(tenant_id))

    async def _load_routing(self, tenant_id: UUID) -> TenantRouting:
        async with tenant_session(self.session_maker, tenant_id) as session:
            aliases = (await session.scalars(select(ModelAlias))).all()
            strategies = (await session.scalars(select(ModelRouting))).all()
        return TenantRouting(
            aliases={alias.name: tuple(alias.models) for alias in aliases},
            strategies={row.model: row.strategy for row in strategies},
        )

    async def response_cache(self, tenant_id: UUID) -> ResponseCacheSettings:
        return await self._cached(self._response_cache, tenant_id, lambda: self._load_response_cache(tenant_id))

    async def _load_response_cache(self, tenant_id: UUID) -> ResponseCacheSettings:
        async with tenant_session(self.session_maker, tenant_id) as session:
            stored = await session.scalar(select(Organization.settings["response_cache"]))
        return msgspec.convert(stored or {}, ResponseCacheSettings)

    async def member(self, tenant_id: UUID, user_id: UUID) -> MemberInfo:
        return await self._cached(self._members, (tenant_id, user_id), lambda: self._load_member(tenant_id, user_id))

    async def _load_member(self, tenant_id: UUID, user_id: UUID) -> MemberInfo:
        async with tenant_session(self.session_maker, tenant_id) as session:
            groups = await group_names_of_user(session, user_id)
            group_ids = [group_id for group_id, _ in groups]
            by_subject = await budgets_by_subject(session, user_id, group_ids)
            currency = await session.scalar(select(Organization.currency))

        def budget(scope: str, name: str, row: Budget | None) -> BudgetInfo:
            if row is None:
                return BudgetInfo(scope, name, -1, 0, 0, frozenset())
            return BudgetInfo(
                scope,
                name,
                row.quota,
                row.rpm_limit,
                row.tpm_limit,
                frozenset(row.allowed_models or []),
                row.max_concurrent,
                row.max_streams,
            )

        budgets = [budget(f"user:{user_id}", "user", by_subject.get(user_id))]
        budgets += [budget(f"group:{group_id}", name, by_subject.get(group_id)) for group_id, name in groups]
        return MemberInfo(frozenset(group_ids), tuple(budgets), currency or DEFAULT_CURRENCY)

    def forget(self, message: str) -> None:
        kind, _, value = message.partition(":")
        if kind == "token":
            self._tokens.pop(value, None)
        elif kind == "tenant":
            tenant_id = UUID(value)
            self._channels.pop(tenant_id, None)
            self._prices.pop(tenant_id, None)
            self._routing.pop(tenant_id, None)
            self._response_cache.pop(tenant_id, None)
            for key in [key for key in self._members if key[0] == tenant_id]:
                self._members.pop(key, None)

    async def listen_for_changes(self, redis: Redis, stop: asyncio.Event) -> None:
        """Drop cached entries as other workers announce changes, until `stop` is set."""
        while not stop.is_set():
            try:
                if (cluster := as_cluster(redis)) is not None:
                    # Its pub/sub picks a node from the slot map, which the client learns on its first command.
                    await cluster.initialize()
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(INVALIDATION_CHANNEL)
                    while not stop.is_set():
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            self.forget(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as error:
                # A lost connection must not end invalidation for good: reconnect.
                logger.warning("cache invalidation listener reconnecting", error=str(error))
                # While disconnected, announcements are missed: start from empty caches.
                for cache in (
                    self._tokens,
                    self._channels,
                    self._prices,
                    self._members,
                    self._routing,
                    self._response_cache,
                ):
                    cache.clear()
                await asyncio.sleep(1)


async def announce_change(redis: Redis, catalog: GatewayCatalog, message: str) -> None:
    """Forget here at once, and tell every other worker."""
    catalog.forget(message)
    await redis.publish(INVALIDATION_CHANNEL, message)


async def announce_keys(redis: Redis, catalog: GatewayCatalog, key_hashes: list[str]) -> None:
    """Keys whose owner changed (deactivated, reactivated): every worker drops them from its cache now."""
    for key_hash in key_hashes:
        await announce_change(redis, catalog, f"token:{key_hash}")
