"""Request and response bodies of the gateway's management API (channels, tokens, prices, usage)."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from app.schemas import Input

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Url = Annotated[str, msgspec.Meta(max_length=500, pattern=r"^https?://")]
ApiKey = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
# Bounded by the columns they are stored in (BIGINT, INTEGER): a larger number is a 400, not a database error.
Credits = Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
Price = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
PerMinute = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
# Calls in flight at once (0: no limit).
InFlight = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
HttpStatus = Annotated[int, msgspec.Meta(ge=100, le=599)]
Scope = Literal["tenant", "group", "personal"]
# The call that tests a channel: a one-token chat completion, or one short embeddings input.
TestKind = Literal["chat", "embeddings"]
# A key's use of the response cache: its organization's choice, or always / never where the cache is on.
KeyCacheMode = Literal["inherit", "on", "off"]


class ChannelCreate(Input):
    name: Name
    type: Annotated[str, msgspec.Meta(max_length=50)]
    models: Annotated[list[ModelName], msgspec.Meta(min_length=1, max_length=500)]
    keys: Annotated[list[ApiKey], msgspec.Meta(max_length=50)] = []
    base_url: Url | None = None
    api_version: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1
    weight: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 1
    model_mapping: dict[ModelName, ModelName] = {}
    scope: Scope = "tenant"
    owner_id: UUID | None = None
    group_id: UUID | None = None
    quota: Credits = -1
    rate_limit: PerMinute = 0
    max_in_flight: InFlight = 0
    test_model: ModelName | None = None
    test_kind: TestKind = "chat"
    # With `keys` left empty: the new channel takes this channel's keys (a clone), copied encrypted.
    keys_from: UUID | None = None


class ChannelUpdate(Input):
    """Fields left out keep their value; `keys`, when given, replaces all keys."""

    name: Name | None = None
    models: Annotated[list[ModelName], msgspec.Meta(min_length=1, max_length=500)] | None = None
    keys: Annotated[list[ApiKey], msgspec.Meta(max_length=50)] | None = None
    base_url: Url | None = None
    api_version: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=1000)] | None = None
    weight: Annotated[int, msgspec.Meta(ge=1, le=10000)] | None = None
    model_mapping: dict[ModelName, ModelName] | None = None
    quota: Credits | None = None
    rate_limit: PerMinute | None = None
    max_in_flight: InFlight | None = None
    test_model: ModelName | None = None
    test_kind: TestKind | None = None
    # A scope change names the group (group scope) or the owner (personal scope) unless the channel has one.
    scope: Scope | None = None
    owner_id: UUID | None = None
    group_id: UUID | None = None


ChannelStatus = Literal["enabled", "disabled", "auto_disabled"]


class ChannelFilter(Input):
    """Which channels a list shows: text in the name or a model, status, provider type, scope."""

    q: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    status: ChannelStatus | None = None
    type: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    scope: Scope | None = None


class ModelListRequest(Input):
    """Ask a provider which models it serves: with `channel_id`, the stored channel's type, URL and key stand in
    for whatever is left out; without, `type` and `key` are needed."""

    channel_id: UUID | None = None
    type: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    base_url: Url | None = None
    api_version: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    key: ApiKey | None = None


class ModelList(msgspec.Struct):
    models: list[str]


class ChannelRead(msgspec.Struct):
    """A channel as admins see it: how many keys it has, never the keys."""

    id: UUID
    name: str
    type: str
    base_url: str | None
    api_version: str | None
    key_count: int
    priority: int
    weight: int
    status: str
    status_reason: str | None
    models: list[str]
    model_mapping: dict[str, str]
    scope: str
    owner_id: UUID | None
    group_id: UUID | None
    quota: int
    used_quota: int
    rate_limit: int
    max_in_flight: int
    test_model: str | None
    test_kind: str
    last_test_at: datetime.datetime | None
    last_test_latency_ms: int | None
    last_test_error: str | None
    created_at: datetime.datetime


class ChannelTestResult(msgspec.Struct):
    ok: bool
    model: str
    kind: str
    latency_ms: int
    error: str | None
    status: str


class TokenCreate(Input):
    name: Name
    quota: Credits = -1
    rpm_limit: PerMinute = 0
    tpm_limit: PerMinute = 0
    max_concurrent: InFlight = 0
    max_streams: InFlight = 0
    allowed_models: Annotated[list[ModelName], msgspec.Meta(max_length=500)] = []
    allowed_channels: Annotated[list[UUID], msgspec.Meta(max_length=500)] = []
    allowed_ips: Annotated[list[Annotated[str, msgspec.Meta(max_length=50)]], msgspec.Meta(max_length=100)] = []
    expires_at: datetime.datetime | None = None
    budget_period: Literal["none", "daily", "weekly", "monthly"] = "none"
    response_cache: KeyCacheMode = "inherit"
    # Admins may issue a key for another user of the tenant; a user's key is always their own.
    user_id: UUID | None = None


class TokenUpdate(Input):
    name: Name | None = None
    status: Literal["active", "disabled"] | None = None
    quota: Credits | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    max_concurrent: InFlight | None = None
    max_streams: InFlight | None = None
    allowed_models: Annotated[list[ModelName], msgspec.Meta(max_length=500)] | None = None
    allowed_channels: Annotated[list[UUID], msgspec.Meta(max_length=500)] | None = None
    allowed_ips: Annotated[list[Annotated[str, msgspec.Meta(max_length=50)]], msgspec.Meta(max_length=100)] | None = (
        None
    )
    expires_at: datetime.datetime | None = None
    response_cache: KeyCacheMode | None = None


class TokenRead(msgspec.Struct):
    id: UUID
    name: str
    key_prefix: str
    user_id: UUID
    status: str
    quota: int
    used_quota: int
    budget_period: str
    rpm_limit: int
    tpm_limit: int
    max_concurrent: int
    max_streams: int
    allowed_models: list[str]
    allowed_channels: list[str]
    allowed_ips: list[str]
    expires_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    created_at: datetime.datetime
    response_cache: str = "inherit"


class TokenCreated(msgspec.Struct):
    """`key` is shown this once; Lyss keeps only its hash."""

    token: TokenRead
    key: str


class PriceWrite(Input):
    """Credits per million tokens (a credit is a millionth of the currency unit). `cached_prompt_price` (a prompt
    token read from the provider's cache) and `cache_write_price` (one written to it) are optional: a call is
    billed at the prompt price for either where it is not set."""

    prompt_price: Price
    completion_price: Price
    cached_prompt_price: Price | None = None
    cache_write_price: Price | None = None
    # The endpoints not billed by the token, in credits: per image generated (`/v1/images/generations`), per
    # second of audio transcribed, per million characters spoken, per request (`/v1/moderations`). Not set:
    # the model is refused at that endpoint.
    image_price: Price | None = None
    audio_second_price: Price | None = None
    speech_price: Price | None = None
    request_price: Price | None = None


class ModelAliasWrite(Input):
    """The models an alias stands for, in the order they are tried (each one served by a channel)."""

    models: Annotated[list[ModelName], msgspec.Meta(max_length=20)]


class ModelAliasRead(msgspec.Struct):
    name: str
    models: list[str]


RoutingStrategy = Literal["priority", "latency", "least_in_flight"]


class ModelRoutingWrite(Input):
    """`priority`: priority tiers, weighted within a tier; `latency`: the channel answering fastest lately;
    `least_in_flight`: the channel with the fewest calls in flight."""

    strategy: RoutingStrategy


class ModelRoutingRead(msgspec.Struct):
    model: str
    strategy: str


class PriceRead(msgspec.Struct):
    model: str
    prompt_price: int
    completion_price: int
    cached_prompt_price: int | None = None
    cache_write_price: int | None = None
    image_price: int | None = None
    audio_second_price: int | None = None
    speech_price: int | None = None
    request_price: int | None = None
    # "tenant": the organization's own price; "built-in": the shipped list's (see `GET /api/model-prices`).
    source: Literal["tenant", "built-in"] = "tenant"


class BuiltInPriceRead(msgspec.Struct):
    """A model of the built-in list: US-dollar credits (millionths of a dollar) per million tokens."""

    model: str
    provider: str
    prompt_price: int
    completion_price: int
    cached_prompt_price: int | None
    cache_write_price: int | None


class BuiltInPriceList(msgspec.Struct):
    as_of: datetime.date
    currency: str
    # Whether the gateway charges the list to this organization: only where its currency is the list's.
    applies: bool
    # Provider type name -> display name (Azure OpenAI uses OpenAI's model names).
    providers: dict[str, str]
    prices: list[BuiltInPriceRead]
    # Provider type name -> how its prices read, where they are not plain per-token prices (rerank models).
    notes: dict[str, str]


class UsageRead(msgspec.Struct):
    id: UUID
    created_at: datetime.datetime
    user_id: UUID | None
    token_id: UUID | None
    channel_id: UUID | None
    request_id: str | None
    endpoint: str
    model: str
    upstream_model: str | None
    prompt_tokens: int
    completion_tokens: int
    # Of the prompt tokens: read from the provider's prompt cache, and written to it (each priced on its own).
    cached_tokens: int
    cache_write_tokens: int
    cost: int
    # Credits of the reported usage beyond what the call reserved: not charged to the key, on the record.
    overshoot: int
    latency_ms: int
    upstream_latency_ms: int | None
    status_code: int
    outcome: str
    stream: bool


# What the gateway records as a call's `outcome`; older or newer rows may hold others.
USAGE_OUTCOMES = ("ok", "cache_hit", "client_disconnected", "upstream_cut", "upstream_error", "refused")


class UsageAttempt(msgspec.Struct):
    """One channel tried for a call, in failover order."""

    channel_id: UUID | None
    # The channel's name now, or as the attempt recorded it when the channel is gone.
    channel: str | None
    status: int | None
    latency_ms: int | None
    error: str | None


class UsageDetail(UsageRead):
    """One call on the record with the names of who and what made it (null where the row is gone)."""

    user_email: str | None
    token_name: str | None
    channel_name: str | None
    # The message the client got, when it got no answer.
    error: str | None
    # Why Lyss refused or failed the call (`rpm`, `budget`, `no_channel`, ...), and whose limit it was.
    reason: str | None
    scope: str | None
    scope_name: str | None
    attempts: list[UsageAttempt]


class UsagePage(msgspec.Struct):
    items: list[UsageRead]
    # Pass back as `cursor` for the next (older) page; absent on the last page.
    next_cursor: str | None


class DailyUsage(msgspec.Struct):
    day: datetime.date
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost: int


class ProviderTypeRead(msgspec.Struct):
    name: str
    display_name: str
    base_url: str | None
    api_format: str
    # The parameter a completion's output limit is sent in: `max_tokens` or `max_completion_tokens`.
    output_limit_parameter: str


class ResponseCacheSettings(Input):
    """Per tenant (admins): whether the gateway answers repeated identical chat calls from its cache, and how."""

    enabled: bool = False
    # How long an answer is kept (1 s to 30 days).
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 86_400)] = 3600
    # The largest answer kept, in bytes (a stream's: all of its events); a larger one is served, not kept.
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=1024, le=4 * 1024 * 1024)] = 256 * 1024
    # What a hit is charged, as a fraction of what the answer cost the first time (0: nothing).
    hit_cost_fraction: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    # Answers sampled at a temperature above 0 (or none given: providers default to 1) vary from call to call.
    cache_sampled: bool = False
