"""Managing the gateway: channels (keys encrypted), API tokens (hashed), prices, usage queries, channel tests.

Changes go through `ChannelAdmin`, `TokenAdmin` and `PriceAdmin`, which commit and then tell every worker's cache.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
import time
from typing import Annotated, Any
from uuid import UUID

import aiohttp
import msgspec
from redis.asyncio import Redis
from sqlalchemy import Text, and_, cast, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.services import ADMIN_ROLES
from app.auth.tokens import Principal
from app.encryption import SecretBox
from app.errors import Conflict, InvalidRequest, NotFound
from app.gateway.adapters import ADAPTERS
from app.gateway.adapters.anthropic import ANTHROPIC_VERSION
from app.gateway.adapters.base import Target, Timeouts, UpstreamError
from app.gateway.caches import UNIT_PRICES, GatewayCatalog, announce_change, channel_keys_context
from app.gateway.price_list import price_list
from app.gateway.rollups import CALL_FAILED, daily_sums, day_start, sums_since
from app.gateway.schemas import (
    BuiltInPriceList,
    BuiltInPriceRead,
    ChannelCreate,
    ChannelFilter,
    ChannelRead,
    ChannelTestResult,
    ChannelUpdate,
    DailyUsage,
    HttpStatus,
    ModelAliasRead,
    ModelAliasWrite,
    ModelList,
    ModelListRequest,
    ModelName,
    ModelRoutingRead,
    ModelRoutingWrite,
    PriceRead,
    PriceWrite,
    ResponseCacheSettings,
    TokenCreate,
    TokenRead,
    TokenUpdate,
    UsageAttempt,
    UsageDetail,
    UsagePage,
    UsageRead,
)
from app.schemas import read_as
from app.storage.base import ObjectStore
from app.storage.services import job_file_url
from app.tenants.money import plain_amount
from app.tenants.plans import require_room_for_api_key, require_room_for_channel
from app.tenants.services import Actor, audit_change
from db.auth import User
from db.provider import ApiToken, Channel, ModelAlias, ModelPrice, ModelRouting, ProviderType, UsageLog
from db.tenant import Organization, UserGroup, UserGroupMember

TOKEN_PREFIX = "sk-lyss-"  # noqa: S105 - the visible prefix of every key, not a secret
HEALTH_CHECK_TIMEOUTS = Timeouts(connect=10.0, read=30.0)
MODEL_LIST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


def new_api_key() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def provider_type(session: AsyncSession, name: str, *, echo_enabled: bool) -> ProviderType:
    found = await session.scalar(select(ProviderType).where(ProviderType.name == name))
    if found is None or (found.api_format == "echo" and not echo_enabled):
        names = (await session.scalars(select(ProviderType.name).order_by(ProviderType.id))).all()
        usable = [n for n in names if n != "echo" or echo_enabled]
        raise InvalidRequest(f"Unknown channel type '{name}'; use one of: {', '.join(usable)}.", field="type")
    return found


def encrypt_keys(box: SecretBox, tenant_id: UUID, keys: list[str]) -> str:
    return box.encrypt(msgspec.json.encode(keys).decode(), context=channel_keys_context(tenant_id))


def _check_base_url(kind: ProviderType, base_url: str | None) -> None:
    if base_url is None and kind.base_url is None and kind.api_format != "echo":
        raise InvalidRequest(
            f"A '{kind.name}' channel needs its base_url (the API root, e.g. https://host/v1).", field="base_url"
        )


def _check_test_kind(kind: ProviderType, test_kind: str) -> None:
    # Every embeddings probe of such a channel would fail, and an auto-disabled one would never come back.
    if test_kind == "embeddings" and not ADAPTERS[kind.api_format].supports_embeddings:
        raise InvalidRequest(
            f"test_kind: channels of type '{kind.name}' have no embeddings API; test them with chat.", field="test_kind"
        )


async def _check_scope(session: AsyncSession, scope: str, owner_id: UUID | None, group_id: UUID | None) -> None:
    # Under RLS, a user or group of another tenant is simply not found here.
    if scope == "personal" and (owner_id is None or await session.get(User, owner_id) is None):
        raise InvalidRequest("A personal channel needs the owner_id of a user of this organization.", field="owner_id")
    if scope == "group" and (group_id is None or await session.get(UserGroup, group_id) is None):
        raise InvalidRequest("A group channel needs the group_id of a group of this organization.", field="group_id")


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A channel named '{name}' already exists.", field="name")


class _ManagementService:
    """What every service of the management plane shares: the caller's session, and the announcement that
    makes every worker's catalog drop what a committed change made stale."""

    def __init__(self, session: AsyncSession, *, tenant_id: UUID, redis: Redis, catalog: GatewayCatalog) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.redis = redis
        self.catalog = catalog

    async def _commit_and_announce(self, message: str) -> None:
        await self.session.commit()
        # Only after the commit: the workers that hear it reload from the database at once.
        await announce_change(self.redis, self.catalog, message)


class ChannelAdmin(_ManagementService):
    """The organization's channels as an admin changes them: each change is audited, committed and announced."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        tenant_id: UUID,
        redis: Redis,
        catalog: GatewayCatalog,
        actor: Actor,
        secret_box: SecretBox,
        http: aiohttp.ClientSession,
        echo_enabled: bool,
    ) -> None:
        super().__init__(session, tenant_id=tenant_id, redis=redis, catalog=catalog)
        self.actor = actor
        self.secret_box = secret_box
        self.http = http
        self.echo_enabled = echo_enabled

    async def create(self, data: ChannelCreate) -> Channel:
        session = self.session
        kind = await provider_type(session, data.type, echo_enabled=self.echo_enabled)
        _check_base_url(kind, data.base_url)
        _check_test_kind(kind, data.test_kind)
        await require_room_for_channel(session, kind.name)
        encrypted_keys = encrypt_keys(self.secret_box, self.tenant_id, data.keys)
        if not data.keys and data.keys_from is not None:
            source = await session.get(Channel, data.keys_from)  # RLS: another tenant's channel is not found
            if source is None:
                raise NotFound("keys_from: no channel of this organization has this id.", field="keys_from")
            # Same tenant, same encryption context: the ciphertext is copied, the keys never leave it.
            encrypted_keys = source.encrypted_keys
        elif not data.keys and kind.api_format != "echo":
            raise InvalidRequest("A channel needs at least one API key in `keys`.", field="keys")
        await _check_scope(session, data.scope, data.owner_id, data.group_id)
        if await session.scalar(select(Channel.id).where(Channel.name == data.name)) is not None:
            raise _name_taken(data.name)
        channel = Channel(
            tenant_id=self.tenant_id,
            name=data.name,
            type_id=kind.id,
            base_url=data.base_url,
            api_version=data.api_version,
            encrypted_keys=encrypted_keys,
            priority=data.priority,
            weight=data.weight,
            models=data.models,
            model_mapping=data.model_mapping,
            config_scope=data.scope,
            owner_id=data.owner_id if data.scope == "personal" else None,
            group_id=data.group_id if data.scope == "group" else None,
            quota=data.quota,
            rate_limit=data.rate_limit,
            max_in_flight=data.max_in_flight,
            test_model=data.test_model,
            test_kind=data.test_kind,
        )
        session.add(channel)
        await session.flush()
        cloned = {"keys_from": str(data.keys_from)} if data.keys_from and not data.keys else {}
        audit_change(
            session, self.actor, "channel.created", "channel", channel.id, name=channel.name, type=data.type, **cloned
        )
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return channel

    async def update(self, channel: Channel, data: ChannelUpdate) -> Channel:
        session = self.session
        changes = {field: value for field, value in msgspec.structs.asdict(data).items() if value is not None}
        keys = changes.pop("keys", None)
        scope_change = {name: changes.pop(name) for name in ("scope", "owner_id", "group_id") if name in changes}
        if scope_change:
            scope = scope_change.get("scope", channel.config_scope)
            owner_id = scope_change.get("owner_id", channel.owner_id) if scope == "personal" else None
            group_id = scope_change.get("group_id", channel.group_id) if scope == "group" else None
            await _check_scope(session, scope, owner_id, group_id)
            changes |= {"config_scope": scope, "owner_id": owner_id, "group_id": group_id}
        if "test_kind" in changes:
            _check_test_kind(await session.get_one(ProviderType, channel.type_id), changes["test_kind"])
        renamed = "name" in changes and changes["name"] != channel.name
        if renamed and await session.scalar(select(Channel.id).where(Channel.name == changes["name"])) is not None:
            raise _name_taken(changes["name"])
        # Which fields changed, never their values: keys are secrets and the rest is on the channel itself.
        changed = sorted([field for field, value in changes.items() if getattr(channel, field) != value])
        for field, value in changes.items():
            setattr(channel, field, value)
        if keys is not None:
            channel.encrypted_keys = encrypt_keys(self.secret_box, channel.tenant_id, keys)
            changed = sorted([*changed, "keys"])
        await session.flush()
        audit_change(session, self.actor, "channel.updated", "channel", channel.id, name=channel.name, fields=changed)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return channel

    async def set_status(self, channel: Channel, status: str) -> Channel:
        """Enable (also clearing an automatic disable) or disable a channel."""
        channel.status = status
        channel.status_reason = None
        await self.session.flush()
        audit_change(self.session, self.actor, f"channel.{status}", "channel", channel.id, name=channel.name)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return channel

    async def remove(self, channel: Channel) -> None:
        audit_change(self.session, self.actor, "channel.deleted", "channel", channel.id, name=channel.name)
        await self.session.delete(channel)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")

    async def test(self, channel: Channel) -> ChannelTestResult:
        """`test_channel`, committed: its outcome (and a channel it enabled again) is what the workers reload."""
        result = await test_channel(self.session, channel, self.secret_box, self.http)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return result

    async def fetch_models(self, request: ModelListRequest) -> ModelList:
        """What the provider's model list names, asked with the request's URL and key (or the stored channel's)."""
        session = self.session
        channel = None
        if request.channel_id is not None:
            channel, _ = await channel_with_type(session, request.channel_id)
        if request.type is not None:
            kind = await provider_type(session, request.type, echo_enabled=self.echo_enabled)
        elif channel is not None:
            kind = await session.get_one(ProviderType, channel.type_id)
        else:
            raise InvalidRequest("Choose the channel's type first.", field="type")
        key = request.key
        if key is None and channel is not None:
            stored = msgspec.json.decode(
                self.secret_box.decrypt(channel.encrypted_keys, context=channel_keys_context(channel.tenant_id))
            )
            key = stored[0] if stored else None
        base_url = request.base_url or (channel.base_url if channel is not None else None) or kind.base_url
        return ModelList(models=await provider_models(self.http, kind.api_format, base_url, key))


async def provider_models(
    http: aiohttp.ClientSession, api_format: str, base_url: str | None, key: str | None
) -> list[str]:
    """`GET {base_url}/models` in the provider's dialect, sorted ids; every failure is an `InvalidRequest` on
    `models` that says what went wrong without repeating the key or the provider's answer (which may quote it)."""
    if api_format == "azure":
        raise InvalidRequest(
            "Azure OpenAI serves the deployments you created in Azure; type their names here, one per line.",
            field="models",
        )
    if api_format == "echo":
        raise InvalidRequest(
            "The echo channel answers to any model name; type the names it should serve.", field="models"
        )
    if not base_url:
        raise InvalidRequest("Enter the base URL to fetch the models from.", field="base_url")
    if not key:
        raise InvalidRequest("Enter an API key to fetch the models with.", field="keys")
    if api_format == "anthropic":
        url = f"{base_url.rstrip('/')}/models?limit=1000"
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    elif api_format == "gemini":
        url = f"{base_url.rstrip('/')}/models?pageSize=1000"
        headers = {"x-goog-api-key": key}
    else:
        url = f"{base_url.rstrip('/')}/models"
        headers = {"Authorization": f"Bearer {key}"}
    try:
        async with http.get(url, headers=headers, timeout=MODEL_LIST_TIMEOUT, allow_redirects=False) as response:
            status = response.status
            raw = await response.read() if status == 200 else b""
    except TimeoutError:
        raise InvalidRequest(
            "The provider did not answer within 10 seconds; try again later.", field="models"
        ) from None
    except aiohttp.ClientError:
        raise InvalidRequest(
            "Could not reach the provider at this base URL; check the address and that it is reachable from Lyss.",
            field="models",
        ) from None
    if status in (401, 403):
        raise InvalidRequest(f"The provider refused the API key (HTTP {status}); check the key.", field="models")
    if status != 200:
        raise InvalidRequest(
            f"The provider answered HTTP {status} to its model list; check the base URL (the API root, …/v1).",
            field="models",
        )
    try:
        answer = msgspec.json.decode(raw)
        ids = gemini_model_ids(answer) if api_format == "gemini" else [entry["id"] for entry in answer["data"]]
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        raise InvalidRequest(
            "The provider's answer is not a model list (expected JSON with `data`).", field="models"
        ) from None
    models = sorted({model for model in ids if isinstance(model, str) and 0 < len(model) <= 100})
    if not models:
        raise InvalidRequest("The provider lists no models for this key; type them by hand.", field="models")
    return models[:500]


def gemini_model_ids(answer: Any) -> list[str]:
    """Gemini's model list (`{"models": [{"name": "models/gemini-…", "supportedGenerationMethods": […]}]}`):
    the names without `models/`, of the models that chat (embedding-only ones would never answer a call)."""
    return [
        str(entry["name"]).removeprefix("models/")
        for entry in answer["models"]
        if "generateContent" in entry.get("supportedGenerationMethods", ["generateContent"])
    ]


async def channel_with_type(session: AsyncSession, channel_id: UUID) -> tuple[Channel, str]:
    """A channel of the caller's organization (RLS) and its provider type's name; 404 otherwise."""
    row = (
        await session.execute(select(Channel, ProviderType.name).join(ProviderType).where(Channel.id == channel_id))
    ).one_or_none()
    if row is None:
        raise NotFound("No such channel.")
    return row[0], row[1]


def channel_read(channel: Channel, type_name: str, box: SecretBox) -> ChannelRead:
    keys = msgspec.json.decode(box.decrypt(channel.encrypted_keys, context=channel_keys_context(channel.tenant_id)))
    return read_as(ChannelRead, channel, type=type_name, key_count=len(keys), scope=channel.config_scope)


async def test_channel(
    session: AsyncSession, channel: Channel, box: SecretBox, http: aiohttp.ClientSession
) -> ChannelTestResult:
    """Make a real, minimal call of the channel's test kind; an auto-disabled channel that passes is enabled again.

    This is also the periodic health check's probe.
    """
    kind = await session.get_one(ProviderType, channel.type_id)
    keys = msgspec.json.decode(box.decrypt(channel.encrypted_keys, context=channel_keys_context(channel.tenant_id)))
    model = channel.test_model or channel.models[0]
    target = Target(
        channel_id=str(channel.id),
        base_url=channel.base_url or kind.base_url or "",
        api_key=keys[0] if keys else "",
        upstream_model=channel.model_mapping.get(model, model),
        api_version=channel.api_version,
    )
    adapter = ADAPTERS[kind.api_format]
    started = time.perf_counter()
    error: str | None = None
    try:
        if channel.test_kind == "embeddings":
            probe = {"model": target.upstream_model, "input": "ping"}
            await adapter.embed(http, target, probe, HEALTH_CHECK_TIMEOUTS)
        else:
            body: dict[str, Any] = {
                "model": target.upstream_model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            }
            await adapter.complete(http, target, body, HEALTH_CHECK_TIMEOUTS)
    except UpstreamError as failure:
        error = failure.message[:1000]
    latency_ms = int((time.perf_counter() - started) * 1000)
    channel.last_test_at = datetime.datetime.now(datetime.UTC)
    channel.last_test_latency_ms = latency_ms
    channel.last_test_error = error
    if error is None and channel.status == "auto_disabled":
        channel.status = "enabled"
        channel.status_reason = None
    await session.flush()
    return ChannelTestResult(
        ok=error is None,
        model=model,
        kind=channel.test_kind,
        latency_ms=latency_ms,
        error=error,
        status=channel.status,
    )


def _valid_networks(values: list[str]) -> list[str]:
    try:
        return [str(ipaddress.ip_network(value.strip(), strict=False)) for value in values]
    except ValueError as error:
        raise InvalidRequest(
            f"allowed_ips: {error}; use addresses or networks like 203.0.113.0/24.", field="allowed_ips"
        ) from None


async def _known_channels(session: AsyncSession, channel_ids: list[UUID]) -> list[str]:
    """`allowed_channels` as stored, once every id is a channel of the caller's organization (RLS hides the rest)."""
    found = set(await session.scalars(select(Channel.id).where(Channel.id.in_(channel_ids)))) if channel_ids else set()
    unknown = [str(channel_id) for channel_id in channel_ids if channel_id not in found]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InvalidRequest(
            f"allowed_channels: no channel of this organization has the id {shown}; "
            "name only this organization's channels (as GET /api/channels lists them).",
            field="allowed_channels",
        )
    return [str(channel_id) for channel_id in channel_ids]


async def create_token(
    session: AsyncSession, *, tenant_id: UUID, user_id: UUID, data: TokenCreate, actor: Actor
) -> tuple[ApiToken, str]:
    """A new key, flushed but not committed (`TokenAdmin.create` commits; a new organization's demo key is
    committed with the organization); the key itself is returned this once."""
    if await session.get(User, user_id) is None:
        raise NotFound("No such user in this organization.", field="user_id")
    if await session.scalar(select(ApiToken.id).where(ApiToken.user_id == user_id, ApiToken.name == data.name)):
        raise _key_name_taken(data.name)
    await require_room_for_api_key(session, user_id)
    if data.expires_at is not None and data.expires_at <= datetime.datetime.now(datetime.UTC):
        raise InvalidRequest("expires_at is in the past.", field="expires_at")
    key = new_api_key()
    token = ApiToken(
        tenant_id=tenant_id,
        user_id=user_id,
        name=data.name,
        key_hash=api_key_hash(key),
        key_prefix=key[:14],
        quota=data.quota,
        rpm_limit=data.rpm_limit,
        tpm_limit=data.tpm_limit,
        max_concurrent=data.max_concurrent,
        max_streams=data.max_streams,
        allowed_models=data.allowed_models,
        allowed_channels=await _known_channels(session, data.allowed_channels),
        allowed_ips=_valid_networks(data.allowed_ips),
        expires_at=data.expires_at,
        budget_period=data.budget_period,
        response_cache=data.response_cache,
    )
    session.add(token)
    await session.flush()
    audit_change(
        session,
        actor,
        "token.created",
        "api_token",
        token.id,
        name=token.name,
        owner=str(user_id),
        prefix=token.key_prefix,
    )
    return token, key


def _key_name_taken(name: str) -> Conflict:
    return Conflict(f"This user already has a key named '{name}'.", field="name")


class TokenAdmin(_ManagementService):
    """API keys as their owner or an admin changes them: each change is audited, committed and announced."""

    def __init__(
        self, session: AsyncSession, *, tenant_id: UUID, redis: Redis, catalog: GatewayCatalog, actor: Actor
    ) -> None:
        super().__init__(session, tenant_id=tenant_id, redis=redis, catalog=catalog)
        self.actor = actor

    async def create(self, user_id: UUID, data: TokenCreate) -> tuple[ApiToken, str]:
        """A new key for `user_id`, and the key itself (shown once; only its hash is kept)."""
        token, key = await create_token(
            self.session, tenant_id=self.tenant_id, user_id=user_id, data=data, actor=self.actor
        )
        # No worker can have cached a key that did not exist yet: nothing to announce.
        await self.session.commit()
        return token, key

    async def update(self, token: ApiToken, data: TokenUpdate) -> ApiToken:
        session = self.session
        changes = {field: value for field, value in msgspec.structs.asdict(data).items() if value is not None}
        if "allowed_ips" in changes:
            changes["allowed_ips"] = _valid_networks(changes["allowed_ips"])
        if "allowed_channels" in changes:
            changes["allowed_channels"] = await _known_channels(session, changes["allowed_channels"])
        if "name" in changes and changes["name"] != token.name:
            same_name = select(ApiToken.id).where(ApiToken.user_id == token.user_id, ApiToken.name == changes["name"])
            if await session.scalar(same_name):
                raise _key_name_taken(changes["name"])
        changed = sorted(field for field, value in changes.items() if getattr(token, field) != value)
        for field, value in changes.items():
            setattr(token, field, value)
        await session.flush()
        audit_change(session, self.actor, "token.updated", "api_token", token.id, name=token.name, fields=changed)
        await self._commit_and_announce(f"token:{token.key_hash}")
        return token

    async def revoke(self, token: ApiToken) -> None:
        audit_change(
            self.session, self.actor, "token.revoked", "api_token", token.id, name=token.name, prefix=token.key_prefix
        )
        await self.session.delete(token)
        await self._commit_and_announce(f"token:{token.key_hash}")


async def visible_token(session: AsyncSession, principal: Principal, token_id: UUID) -> ApiToken:
    """An API key the caller may see: any of the organization's for admins, their own for everyone else."""
    token = await session.get(ApiToken, token_id)
    if token is None or (principal.role not in ADMIN_ROLES and token.user_id != principal.user_id):
        raise NotFound("No such API key.")
    return token


def token_read(token: ApiToken) -> TokenRead:
    return read_as(TokenRead, token)


class PriceAdmin(_ManagementService):
    """Model prices (credits per million tokens; `*` prices every model without its own price): each change is
    committed and announced."""

    async def set(self, model: str, data: PriceWrite) -> ModelPrice:
        if not 0 < len(model) <= 100:
            raise InvalidRequest("The model name must be 1-100 characters long.", field="model")
        if data.cached_prompt_price is not None and data.cached_prompt_price > data.prompt_price:
            raise InvalidRequest(
                "The cached prompt price cannot be more than the prompt price.", field="cached_prompt_price"
            )
        price = await self.session.scalar(select(ModelPrice).where(ModelPrice.model == model))
        if price is None:
            price = ModelPrice(tenant_id=self.tenant_id, model=model, prompt_price=0, completion_price=0)
            self.session.add(price)
        price.prompt_price = data.prompt_price
        price.completion_price = data.completion_price
        price.cached_prompt_price = data.cached_prompt_price
        price.cache_write_price = data.cache_write_price
        for unit in UNIT_PRICES:
            setattr(price, unit, getattr(data, unit))
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return price

    async def remove(self, model: str) -> None:
        price = await self.session.scalar(select(ModelPrice).where(ModelPrice.model == model))
        if price is None:
            raise NotFound("No price for this model.")
        await self.session.delete(price)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")

    async def currency_changed(self) -> None:
        """The organization's currency changed (in this session): whether the built-in list applies changed too."""
        await self._commit_and_announce(f"tenant:{self.tenant_id}")


class RoutingAdmin(_ManagementService):
    """Model aliases (a name for models tried in turn) and per-model routing strategies: each change is
    committed and announced."""

    async def _served(self) -> set[str]:
        rows = await self.session.scalars(select(Channel.models).where(Channel.status == "enabled"))
        return {model for models in rows for model in models}

    async def set_alias(self, name: str, data: ModelAliasWrite) -> ModelAlias:
        if not 0 < len(name) <= 100:
            raise InvalidRequest("name: an alias name is 1-100 characters long.", field="name")
        served = await self._served()
        if name in served:
            raise Conflict(f"name: '{name}' is a model a channel serves; an alias needs another name.", field="name")
        if not data.models:
            raise InvalidRequest("models: an alias needs at least one model.", field="models")
        if len(set(data.models)) != len(data.models):
            raise InvalidRequest("models: each model may appear once in an alias.", field="models")
        aliases = set(await self.session.scalars(select(ModelAlias.name)))
        for model in data.models:
            if model in aliases or model == name:
                raise InvalidRequest(f"models: '{model}' is an alias; an alias names models only.", field="models")
            if model not in served:
                raise InvalidRequest(f"models: no enabled channel serves the model '{model}'.", field="models")
        alias = await self.session.scalar(select(ModelAlias).where(ModelAlias.name == name))
        if alias is None:
            alias = ModelAlias(tenant_id=self.tenant_id, name=name, models=[])
            self.session.add(alias)
        alias.models = list(data.models)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return alias

    async def remove_alias(self, name: str) -> None:
        alias = await self.session.scalar(select(ModelAlias).where(ModelAlias.name == name))
        if alias is None:
            raise NotFound("No alias of this name.")
        await self.session.delete(alias)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")

    async def set_strategy(self, model: str, data: ModelRoutingWrite) -> ModelRouting:
        if not 0 < len(model) <= 100:
            raise InvalidRequest("The model name must be 1-100 characters long.", field="model")
        if model not in await self._served():
            raise InvalidRequest(f"model: no enabled channel serves the model '{model}'.", field="model")
        routing = await self.session.scalar(select(ModelRouting).where(ModelRouting.model == model))
        if routing is None:
            routing = ModelRouting(tenant_id=self.tenant_id, model=model, strategy=data.strategy)
            self.session.add(routing)
        routing.strategy = data.strategy
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return routing

    async def remove_strategy(self, model: str) -> None:
        routing = await self.session.scalar(select(ModelRouting).where(ModelRouting.model == model))
        if routing is None:
            raise NotFound("This model has no routing strategy of its own.")
        await self.session.delete(routing)
        await self._commit_and_announce(f"tenant:{self.tenant_id}")


async def model_aliases(session: AsyncSession) -> list[ModelAliasRead]:
    rows = await session.scalars(select(ModelAlias).order_by(ModelAlias.name))
    return [read_as(ModelAliasRead, row) for row in rows]


async def model_alias(session: AsyncSession, name: str) -> ModelAliasRead:
    row = await session.scalar(select(ModelAlias).where(ModelAlias.name == name))
    if row is None:
        raise NotFound("No alias of this name.")
    return read_as(ModelAliasRead, row)


async def routing_strategies(session: AsyncSession) -> list[ModelRoutingRead]:
    rows = await session.scalars(select(ModelRouting).order_by(ModelRouting.model))
    return [read_as(ModelRoutingRead, row) for row in rows]


async def served_models(session: AsyncSession) -> list[str]:
    """The models the organization-wide enabled channels serve, sorted: what tenant defaults may name."""
    rows = await session.scalars(
        select(Channel.models).where(Channel.status == "enabled", Channel.config_scope == "tenant")
    )
    return sorted({model for models in rows for model in models})


class UsageFilter(msgspec.Struct, frozen=True):
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    user_id: UUID | None = None
    token_id: UUID | None = None
    channel_id: UUID | None = None
    model: ModelName | None = None
    outcome: Annotated[str, msgspec.Meta(max_length=30)] | None = None
    status_code: HttpStatus | None = None

    def conditions(self) -> list[Any]:
        columns = {
            "user_id": UsageLog.user_id,
            "token_id": UsageLog.token_id,
            "model": UsageLog.model,
            "outcome": UsageLog.outcome,
            "status_code": UsageLog.status_code,
        }
        found: list[Any] = [
            column == getattr(self, name) for name, column in columns.items() if getattr(self, name) is not None
        ]
        if self.channel_id is not None:
            # The calls a channel answered, and those it failed before another channel answered or none did.
            tried = UsageLog.details.contains({"attempts": [{"channel_id": str(self.channel_id)}]})
            found.append(or_(UsageLog.channel_id == self.channel_id, tried))
        if self.since is not None:
            found.append(UsageLog.created_at >= self.since)
        if self.until is not None:
            found.append(UsageLog.created_at < self.until)
        return found


def _parse_cursor(cursor: str) -> tuple[datetime.datetime, UUID]:
    try:
        moment, _, row_id = cursor.partition("|")
        return datetime.datetime.fromisoformat(moment), UUID(row_id)
    except ValueError:
        raise InvalidRequest("Invalid cursor; pass back the next_cursor of the previous page.") from None


async def usage_rows(
    session: AsyncSession, filters: UsageFilter, *, cursor: str | None, limit: int
) -> tuple[list[UsageLog], str | None]:
    """Newest first, keyset-paginated on (created_at, id): page 1,000 costs what page 1 costs."""
    statement = select(UsageLog).where(*filters.conditions())
    if cursor:
        moment, row_id = _parse_cursor(cursor)
        # The redundant `created_at <= moment` bounds the index scan: without it the OR is only a filter, and a
        # page a million rows back read all million before it.
        statement = statement.where(
            UsageLog.created_at <= moment,
            or_(UsageLog.created_at < moment, and_(UsageLog.created_at == moment, UsageLog.id < row_id)),
        )
    rows = list(
        await session.scalars(statement.order_by(UsageLog.created_at.desc(), UsageLog.id.desc()).limit(limit + 1))
    )
    next_cursor = f"{rows[limit - 1].created_at.isoformat()}|{rows[limit - 1].id}" if len(rows) > limit else None
    return rows[:limit], next_cursor


async def usage_page(session: AsyncSession, filters: UsageFilter, *, cursor: str | None, limit: int) -> UsagePage:
    rows, next_cursor = await usage_rows(session, filters, cursor=cursor, limit=limit)
    return UsagePage(items=[read_as(UsageRead, row) for row in rows], next_cursor=next_cursor)


def _text(value: object) -> str | None:
    # `details` is written by the gateway, but older rows may lack a key or hold another shape.
    return value if isinstance(value, str) and value else None


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _uuid(value: object) -> UUID | None:
    try:
        return UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _recorded_attempts(details: dict[str, Any]) -> list[dict[str, Any]]:
    attempts = details.get("attempts")
    return [attempt for attempt in attempts if isinstance(attempt, dict)] if isinstance(attempts, list) else []


async def usage_detail(session: AsyncSession, principal: Principal, usage_id: UUID) -> UsageDetail:
    """One call of the usage log with the names of its user, key and channels: any of the organization's for
    admins, the caller's own for everyone else (404 otherwise, as for another organization's, which RLS hides)."""
    row = await session.get(UsageLog, usage_id)
    if row is None or (principal.role not in ADMIN_ROLES and row.user_id != principal.user_id):
        raise NotFound("No such call in the usage log.")
    details = row.details if isinstance(row.details, dict) else {}
    attempts = _recorded_attempts(details)
    channel_ids = {row.channel_id, *(_uuid(attempt.get("channel_id")) for attempt in attempts)} - {None}
    channels: dict[UUID, str] = {}
    if channel_ids:
        found = await session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(channel_ids)))
        channels = dict(found.all())
    email = await session.scalar(select(User.email).where(User.id == row.user_id)) if row.user_id else None
    key = await session.scalar(select(ApiToken.name).where(ApiToken.id == row.token_id)) if row.token_id else None
    tried = []
    for attempt in attempts:
        channel_id = _uuid(attempt.get("channel_id"))
        tried.append(
            UsageAttempt(
                channel_id=channel_id,
                channel=(channels.get(channel_id) if channel_id else None) or _text(attempt.get("channel")),
                status=_whole(attempt.get("status")),
                latency_ms=_whole(attempt.get("latency_ms")),
                error=_text(attempt.get("error")),
            )
        )
    return read_as(
        UsageDetail,
        row,
        user_email=email,
        token_name=key,
        channel_name=channels.get(row.channel_id) if row.channel_id else None,
        error=_text(details.get("error")),
        reason=_text(details.get("reason")),
        scope=_text(details.get("scope")),
        scope_name=_text(details.get("scope_name")),
        attempts=tried,
    )


class CallCounts(msgspec.Struct, frozen=True):
    calls: int = 0
    failed: int = 0


async def calls_per_key(session: AsyncSession, since: datetime.datetime) -> dict[UUID, CallCounts]:
    """Calls made with each key since `since`, and how many of them failed (refused ones included)."""
    return {
        token_id: CallCounts(calls=sums.calls, failed=sums.errors)
        for token_id, sums in (await sums_since(session, since, "key")).items()
        if token_id is not None
    }


# Each attempt a call recorded (failover order), or, on a row without attempts, the channel that answered.
_CHANNEL_ATTEMPTS = text("""
    SELECT channel, count(*) AS calls, count(*) FILTER (WHERE status IS NULL OR status NOT BETWEEN 200 AND 299)
    FROM (
        SELECT attempt ->> 'channel_id' AS channel,
               CASE WHEN jsonb_typeof(attempt -> 'status') = 'number' THEN (attempt ->> 'status')::numeric END
                   AS status
        FROM provider_usage_logs AS usage,
             jsonb_array_elements(CASE WHEN jsonb_typeof(usage.details -> 'attempts') = 'array'
                                       THEN usage.details -> 'attempts' ELSE '[]'::jsonb END) AS attempt
        WHERE usage.created_at >= :since
        UNION ALL
        SELECT usage.channel_id::text, usage.status_code
        FROM provider_usage_logs AS usage
        WHERE usage.created_at >= :since AND usage.channel_id IS NOT NULL
          AND CASE WHEN jsonb_typeof(usage.details -> 'attempts') = 'array'
                   THEN jsonb_array_length(usage.details -> 'attempts') ELSE 0 END = 0
    ) AS tried
    GROUP BY channel
""")


async def calls_per_channel(session: AsyncSession, since: datetime.datetime) -> dict[UUID, CallCounts]:
    """Calls each channel was tried for since `since` (a failed-over call counts on every channel it tried),
    and how many of those attempts failed."""
    rows = await session.execute(_CHANNEL_ATTEMPTS, {"since": since})
    counts = {}
    for channel, calls, failed in rows.all():
        if (channel_id := _uuid(channel)) is not None:
            counts[channel_id] = CallCounts(calls=calls, failed=failed)
    return counts


async def usage_by_day(session: AsyncSession, filters: UsageFilter) -> list[DailyUsage]:
    """Calls per UTC day. The whole days come from the daily sums when the filters are among their breakdowns
    (none; a user; a key; a model; a user and a model), the part-days at the window's ends from the log; other
    filters (a channel, an outcome, a status, a user's key) read the log alone."""
    breakdown = _daily_breakdown(filters)
    whole_from = day_start(filters.since, ceiling=True) if filters.since is not None else None
    whole_until = day_start(filters.until) if filters.until is not None else None
    if breakdown is None or (whole_from is not None and whole_until is not None and whole_from >= whole_until):
        return _daily_usage(await _log_by_day(session, filters))
    # Three spans that share no day: the since's part-day, the whole days, the until's part-day.
    found = await daily_sums(
        session,
        breakdown,
        whole_from,
        whole_until,
        user_id=filters.user_id,
        token_id=filters.token_id,
        model=filters.model,
    )
    if filters.since is not None and whole_from is not None and filters.since < whole_from:
        found += await _log_by_day(session, msgspec.structs.replace(filters, until=whole_from))
    if filters.until is not None and whole_until is not None and whole_until < filters.until:
        found += await _log_by_day(session, msgspec.structs.replace(filters, since=whole_until))
    return _daily_usage(found)


def _daily_breakdown(filters: UsageFilter) -> str | None:
    """The daily sums' breakdown that answers these filters, or None when only the log can."""
    if filters.channel_id is not None or filters.outcome is not None or filters.status_code is not None:
        return None
    chosen = (filters.user_id is not None, filters.token_id is not None, filters.model is not None)
    return {
        (False, False, False): "model",
        (True, False, False): "user",
        (False, True, False): "key",
        (False, False, True): "model",
        (True, False, True): "user_model",
    }.get(chosen)


async def _log_by_day(session: AsyncSession, filters: UsageFilter) -> list[tuple[datetime.date, list[int]]]:
    day = func.date_trunc("day", UsageLog.created_at, "UTC").label("day")
    rows = await session.execute(
        select(
            day,
            func.count(),
            func.count().filter(CALL_FAILED),
            func.coalesce(func.sum(UsageLog.prompt_tokens), 0),
            func.coalesce(func.sum(UsageLog.completion_tokens), 0),
            func.coalesce(func.sum(UsageLog.cost), 0),
        )
        .where(*filters.conditions())
        .group_by(day)
    )
    return [(row[0].astimezone(datetime.UTC).date(), [int(figure) for figure in row[1:]]) for row in rows.all()]


def _daily_usage(days: list[tuple[datetime.date, list[int]]]) -> list[DailyUsage]:
    return [
        DailyUsage(
            day=day, requests=requests, errors=errors, prompt_tokens=prompt, completion_tokens=completion, cost=cost
        )
        for day, (requests, errors, prompt, completion, cost) in sorted(days)
    ]


USAGE_EXPORT_KIND = "usage.export"
USAGE_EXPORT_COLUMNS = (
    "created_at", "request_id", "user", "key", "channel", "endpoint", "model", "upstream_model",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cost_credits", "cost",
    "overshoot_credits", "overshoot", "currency",
    "latency_ms", "upstream_latency_ms", "status_code", "outcome", "reason", "error", "stream",
    "usage_id", "user_id", "token_id", "channel_id",
)  # fmt: skip


class ExportNames(msgspec.Struct, frozen=True):
    """What an export writes instead of ids, read once per export: a tenant has far fewer of these than calls."""

    users: dict[UUID, str]
    keys: dict[UUID, str]
    channels: dict[UUID, str]
    currency: str


def usage_export_row(row: UsageLog, names: ExportNames) -> list[str]:
    """A call as a line of `USAGE_EXPORT_COLUMNS`: names where the user, key or channel still exists, the ids
    at the end, money both in credits and as an amount of the organization's currency."""
    details = row.details if isinstance(row.details, dict) else {}
    values: dict[str, object] = {
        "created_at": row.created_at,
        "request_id": row.request_id,
        "user": names.users.get(row.user_id) if row.user_id else None,
        "key": names.keys.get(row.token_id) if row.token_id else None,
        "channel": names.channels.get(row.channel_id) if row.channel_id else None,
        "endpoint": row.endpoint,
        "model": row.model,
        "upstream_model": row.upstream_model,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "cost_credits": row.cost,
        "cost": plain_amount(row.cost),
        "overshoot_credits": row.overshoot,
        "overshoot": plain_amount(row.overshoot),
        "currency": names.currency,
        "latency_ms": row.latency_ms,
        "upstream_latency_ms": row.upstream_latency_ms,
        "status_code": row.status_code,
        "outcome": row.outcome,
        "reason": _text(details.get("reason")),
        "error": _text(details.get("error")),
        "stream": row.stream,
        "usage_id": row.id,
        "user_id": row.user_id,
        "token_id": row.token_id,
        "channel_id": row.channel_id,
    }
    return [csv_cell(values[column]) for column in USAGE_EXPORT_COLUMNS]


def export_name(job_id: UUID) -> str:
    """The object name of a usage export, in its tenant's space of the object store."""
    return f"exports/usage-{job_id}.csv"


def csv_cell(value: object) -> str:
    """A value as a spreadsheet shows it, never as a formula: model names and request ids come from callers."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_download_url(
    session: AsyncSession, store: ObjectStore, principal: Principal, job_id: UUID, *, actor: Actor
) -> str:
    """A short-lived URL of a usage export the caller may download (theirs, or any of the tenant's for admins)."""
    return await job_file_url(
        session,
        store,
        principal,
        job_id,
        kind=USAGE_EXPORT_KIND,
        name=export_name(job_id),
        filename=f"lyss-usage-{job_id}.csv",
        actor=actor,
    )


async def add_demo_gateway(session: AsyncSession, tenant_id: UUID, admin: User, box: SecretBox) -> str:
    """An `echo` channel and an API key for the demo admin, so that a first call works with no provider key."""
    kind = await provider_type(session, "echo", echo_enabled=True)
    session.add(
        Channel(
            tenant_id=tenant_id,
            name="echo",
            type_id=kind.id,
            encrypted_keys=encrypt_keys(box, tenant_id, []),
            models=["echo"],
            test_model="echo",
        )
    )
    _, key = await create_token(
        session, tenant_id=tenant_id, user_id=admin.id, data=TokenCreate(name="demo"), actor=Actor(name="lyss")
    )
    return key


class MonthlyUsage(msgspec.Struct, frozen=True):
    requests: int = 0
    cost: int = 0


async def usage_this_month(
    session: AsyncSession, now: datetime.datetime, *, user_id: UUID | None = None
) -> dict[UUID, MonthlyUsage]:
    """Requests and cost per user since the first of this month (UTC), from the daily rollups."""
    month = now.astimezone(datetime.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        owner: MonthlyUsage(requests=sums.calls, cost=sums.cost)
        for owner, sums in (await sums_since(session, month, "user", user_id=user_id)).items()
        if owner is not None
    }


async def keys_with_owner_emails(session: AsyncSession, user_id: UUID | None) -> list[tuple[ApiToken, str]]:
    """API keys, newest first, with their owners' emails: a user's own only, or (None) the organization's."""
    statement = (
        select(ApiToken, User.email).join(User, User.id == ApiToken.user_id).order_by(ApiToken.created_at.desc())
    )
    if user_id is not None:
        statement = statement.where(ApiToken.user_id == user_id)
    return [(token, email) for token, email in (await session.execute(statement)).all()]


async def channel_models(session: AsyncSession) -> set[str]:
    """Every model any of the organization's channels serves (whatever its scope or status): what may be priced."""
    return {model for models in await session.scalars(select(Channel.models)) for model in models}


async def own_prices(session: AsyncSession) -> list[PriceRead]:
    return [price_read(row) for row in await model_prices(session)]


async def key_names(session: AsyncSession, user_id: UUID | None) -> dict[UUID, str]:
    statement = select(ApiToken.id, ApiToken.name)
    if user_id is not None:
        statement = statement.where(ApiToken.user_id == user_id)
    return {row.id: row.name for row in await session.execute(statement)}


async def channel_names(session: AsyncSession) -> dict[UUID, str]:
    return {row.id: row.name for row in await session.execute(select(Channel.id, Channel.name))}


async def channels_with_type_names(
    session: AsyncSession, filters: ChannelFilter | None = None
) -> list[tuple[Channel, str]]:
    """The organization's channels (those `filters` match), highest priority first, with their provider type's
    display name."""
    statement = select(Channel, ProviderType.display_name).join(ProviderType)
    if filters is not None:
        if filters.q:
            pattern = "%" + filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(
                or_(Channel.name.ilike(pattern, escape="\\"), cast(Channel.models, Text).ilike(pattern, escape="\\"))
            )
        if filters.status:
            statement = statement.where(Channel.status == filters.status)
        if filters.type:
            statement = statement.where(ProviderType.name == filters.type)
        if filters.scope:
            statement = statement.where(Channel.config_scope == filters.scope)
    rows = await session.execute(statement.order_by(Channel.priority.desc(), Channel.name))
    return [(channel, name) for channel, name in rows.all()]


async def channels_usable_by(session: AsyncSession, user_id: UUID) -> list[Channel]:
    """The channels a user's keys may be routed to: the organization's, their groups', their own; by name."""
    groups = select(UserGroupMember.group_id).where(UserGroupMember.user_id == user_id)
    return list(
        await session.scalars(
            select(Channel)
            .where(
                or_(
                    Channel.config_scope == "tenant",
                    and_(Channel.config_scope == "group", Channel.group_id.in_(groups)),
                    and_(Channel.config_scope == "personal", Channel.owner_id == user_id),
                )
            )
            .order_by(Channel.name)
        )
    )


async def provider_types(session: AsyncSession, *, echo_enabled: bool) -> list[ProviderType]:
    """The kinds of channel this installation offers (the local echo only where it is enabled)."""
    kinds = await session.scalars(select(ProviderType).order_by(ProviderType.id))
    return [kind for kind in kinds if kind.api_format != "echo" or echo_enabled]


async def model_prices(session: AsyncSession) -> list[ModelPrice]:
    return list(await session.scalars(select(ModelPrice).order_by(ModelPrice.model)))


def built_in_prices(currency: str) -> BuiltInPriceList:
    """The shipped list, and whether it prices this organization's calls (only in the list's currency)."""
    listed = price_list()
    return BuiltInPriceList(
        as_of=listed.as_of,
        currency=listed.currency,
        applies=currency == listed.currency,
        providers=listed.providers,
        notes=listed.notes,
        prices=[
            BuiltInPriceRead(
                model=entry.model,
                provider=entry.provider,
                prompt_price=entry.prompt_price,
                completion_price=entry.completion_price,
                cached_prompt_price=entry.cached_prompt_price,
                cache_write_price=entry.cache_write_price,
            )
            for entry in listed.prices.values()
        ],
    )


async def effective_prices(session: AsyncSession, currency: str) -> list[PriceRead]:
    """The organization's own prices, and where the built-in list applies, each listed model it has not priced."""
    own = [price_read(row) for row in await model_prices(session)]
    listed = built_in_prices(currency)
    if listed.applies:
        priced = {price.model for price in own}
        own += [
            PriceRead(
                model=entry.model,
                prompt_price=entry.prompt_price,
                completion_price=entry.completion_price,
                cached_prompt_price=entry.cached_prompt_price,
                cache_write_price=entry.cache_write_price,
                source="built-in",
            )
            for entry in listed.prices
            if entry.model not in priced
        ]
    return sorted(own, key=lambda price: price.model)


def price_read(row: ModelPrice) -> PriceRead:
    return PriceRead(
        model=row.model,
        prompt_price=row.prompt_price,
        completion_price=row.completion_price,
        cached_prompt_price=row.cached_prompt_price,
        cache_write_price=row.cache_write_price,
        image_price=row.image_price,
        audio_second_price=row.audio_second_price,
        speech_price=row.speech_price,
        request_price=row.request_price,
    )


async def names_of_channels(session: AsyncSession, ids: list[UUID]) -> dict[UUID, str]:
    """The names of those of `ids` that are channels of the organization; a deleted one is left out."""
    rows = await session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(ids)))
    return {row.id: row.name for row in rows}


async def names_of_keys(session: AsyncSession, ids: list[UUID]) -> dict[UUID, str]:
    """The names of those of `ids` that are API keys of the organization; a revoked one is left out."""
    rows = await session.execute(select(ApiToken.id, ApiToken.name).where(ApiToken.id.in_(ids)))
    return {row.id: row.name for row in rows}


async def response_cache_settings(session: AsyncSession) -> ResponseCacheSettings:
    """The organization's response cache settings (the defaults where it never set them)."""
    stored = await session.scalar(select(Organization.settings["response_cache"]))
    return msgspec.convert(stored or {}, ResponseCacheSettings)


class ResponseCacheAdmin(_ManagementService):
    """The organization's response cache settings as an admin changes them: audited, committed and announced."""

    def __init__(
        self, session: AsyncSession, *, tenant_id: UUID, redis: Redis, catalog: GatewayCatalog, actor: Actor
    ) -> None:
        super().__init__(session, tenant_id=tenant_id, redis=redis, catalog=catalog)
        self.actor = actor

    async def set(self, data: ResponseCacheSettings) -> ResponseCacheSettings:
        organization = await self.session.scalar(select(Organization).with_for_update())
        if organization is None:
            raise NotFound("No such organization.")
        saved = msgspec.to_builtins(data)
        organization.settings = {**(organization.settings or {}), "response_cache": saved}
        audit_change(
            self.session, self.actor, "response_cache.settings_changed", "organization", self.tenant_id, **saved
        )
        await self._commit_and_announce(f"tenant:{self.tenant_id}")
        return data
