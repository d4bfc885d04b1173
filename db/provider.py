"""Tables of the `provider_` prefix: provider types (platform-wide), channels, API tokens, prices, usage logs."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.auth import ENCRYPTED
from db.base import Base, TenantOwned, UpdatedAt, utc_now
from db.tenant import BUDGET_PERIODS

API_FORMATS = ("openai", "azure", "anthropic", "echo", "gemini")
CHANNEL_STATUSES = ("enabled", "disabled", "auto_disabled")
CHANNEL_SCOPES = ("tenant", "group", "personal")
CHANNEL_TEST_KINDS = ("chat", "embeddings")
TOKEN_STATUSES = ("active", "disabled")
# Whether a key's calls use the response cache: as its organization says, or always/never where it is on.
RESPONSE_CACHE_MODES = ("inherit", "on", "off")
ROUTING_STRATEGIES = ("priority", "latency", "least_in_flight")
OUTPUT_LIMIT_PARAMETERS = ("max_tokens", "max_completion_tokens")


class ProviderType(DefaultBase):
    """A kind of provider (platform-wide catalogue, read-only to the service): its wire format and default URL."""

    __tablename__ = "provider_types"
    __table_args__ = (
        CheckConstraint(f"api_format IN {API_FORMATS}", name="api_format"),
        CheckConstraint(f"output_limit_parameter IN {OUTPUT_LIMIT_PARAMETERS}", name="output_limit_parameter"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    # The API root, version included (".../v1"); NULL where every channel brings its own (Azure, custom).
    base_url: Mapped[str | None] = mapped_column(Text)
    api_format: Mapped[str] = mapped_column(String(20))
    # The request parameter that bounds a completion at this provider: OpenAI's reasoning models refuse
    # `max_tokens`; most compatible servers know only it.
    output_limit_parameter: Mapped[str] = mapped_column(String(30), default="max_tokens", server_default="max_tokens")
    # The provider serves the OpenAI Responses API (`<base_url>/responses`) itself: only OpenAI.
    serves_responses: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    supported_models: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")


class Channel(TenantOwned, UpdatedAt, Base):
    """One upstream account: where to call, with which keys, for which models, in which order."""

    __tablename__ = "provider_channels"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uk_provider_channels_tenant_name"),
        CheckConstraint(f"status IN {CHANNEL_STATUSES}", name="status"),
        CheckConstraint(f"config_scope IN {CHANNEL_SCOPES}", name="config_scope"),
        CheckConstraint(f"test_kind IN {CHANNEL_TEST_KINDS}", name="test_kind"),
        CheckConstraint("priority BETWEEN 0 AND 1000", name="priority"),
        CheckConstraint("weight BETWEEN 1 AND 10000", name="weight"),
        CheckConstraint("quota >= -1 AND used_quota >= 0", name="quota"),
        CheckConstraint("max_in_flight >= 0", name="max_in_flight"),
        CheckConstraint("config_scope <> 'personal' OR owner_id IS NOT NULL", name="personal_owner"),
        CheckConstraint("config_scope <> 'group' OR group_id IS NOT NULL", name="group_set"),
        ForeignKeyConstraint(
            ["tenant_id", "owner_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_provider_channels_owner",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            ondelete="CASCADE",
            name="fk_provider_channels_group",
        ),
        Index("idx_channels_tenant_scope", "tenant_id", "config_scope"),
        Index("idx_channels_tenant_status", "tenant_id", "status"),
    )

    name: Mapped[str] = mapped_column(String(100))
    type_id: Mapped[int] = mapped_column(ForeignKey("provider_types.id"))
    base_url: Mapped[str | None] = mapped_column(Text)
    # Azure OpenAI's `api-version`; unused by the other formats.
    api_version: Mapped[str | None] = mapped_column(String(40))
    # A JSON list of API keys, encrypted as one value; calls rotate between them.
    encrypted_keys: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    priority: Mapped[int] = mapped_column(default=1, server_default="1")
    weight: Mapped[int] = mapped_column(default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(20), default="enabled", server_default="enabled")
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Credits (micro-units of currency); -1: no limit.
    quota: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    used_quota: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Requests per minute this channel may take; 0: no limit.
    rate_limit: Mapped[int] = mapped_column(default=0, server_default="0")
    # Calls this channel may have in flight at once, across every worker; 0: no limit.
    max_in_flight: Mapped[int] = mapped_column(default=0, server_default="0")
    config_scope: Mapped[str] = mapped_column(String(20), default="tenant", server_default="tenant")
    owner_id: Mapped[UUID | None]
    group_id: Mapped[UUID | None]
    models: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    model_mapping: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    test_model: Mapped[str | None] = mapped_column(String(100))
    # The call a test or health check makes: a chat completion, or an embeddings call for a channel whose
    # models only embed (a chat call to those always fails, so the channel would never come back).
    test_kind: Mapped[str] = mapped_column(String(20), default="chat", server_default="chat")
    last_test_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    last_test_latency_ms: Mapped[int | None]
    last_test_error: Mapped[str | None] = mapped_column(Text)


class ApiToken(TenantOwned, UpdatedAt, Base):
    """An `sk-...` key for the /v1 API, stored as its SHA-256; the key itself is shown once."""

    __tablename__ = "provider_tokens"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key_hash", name="uk_provider_tokens_tenant_key_hash"),
        UniqueConstraint("tenant_id", "user_id", "name", name="uk_provider_tokens_user_name"),
        CheckConstraint(f"status IN {TOKEN_STATUSES}", name="status"),
        CheckConstraint(f"budget_period IN {BUDGET_PERIODS}", name="budget_period"),
        CheckConstraint("quota >= -1 AND used_quota >= 0", name="quota"),
        CheckConstraint("rpm_limit >= 0 AND tpm_limit >= 0", name="limits"),
        CheckConstraint("max_concurrent >= 0 AND max_streams >= 0", name="concurrency"),
        CheckConstraint(f"response_cache IN {RESPONSE_CACHE_MODES}", name="response_cache"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_provider_tokens_user",
        ),
        # The gateway finds a token by its hash before it knows the tenant (SECURITY DEFINER lookup).
        Index("idx_provider_tokens_key_hash", "key_hash"),
        Index("idx_provider_tokens_tenant_user", "tenant_id", "user_id"),
    )

    user_id: Mapped[UUID]
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    quota: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    used_quota: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    budget_period: Mapped[str] = mapped_column(String(10), default="none", server_default="none")
    # When used_quota last went back to zero for a daily or monthly budget (the quota-reset job).
    budget_reset_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.datetime.now(datetime.UTC), server_default=text("now()")
    )
    rpm_limit: Mapped[int] = mapped_column(default=0, server_default="0")
    tpm_limit: Mapped[int] = mapped_column(default=0, server_default="0")
    # Requests (and, of those, streams) this key may have in flight at once; 0: no limit.
    max_concurrent: Mapped[int] = mapped_column(default=0, server_default="0")
    max_streams: Mapped[int] = mapped_column(default=0, server_default="0")
    allowed_models: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    allowed_channels: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    allowed_ips: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    response_cache: Mapped[str] = mapped_column(String(10), default="inherit", server_default="inherit")
    expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class ModelPrice(TenantOwned, UpdatedAt, Base):
    """What a model costs this tenant, in credits per million tokens. Model "*" prices every other model."""

    __tablename__ = "provider_model_prices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "model", name="uk_provider_model_prices_model"),
        CheckConstraint("prompt_price >= 0 AND completion_price >= 0", name="prices"),
        CheckConstraint("cached_prompt_price IS NULL OR cached_prompt_price >= 0", name="cached_prompt_price"),
        CheckConstraint("cache_write_price IS NULL OR cache_write_price >= 0", name="cache_write_price"),
        CheckConstraint("image_price IS NULL OR image_price >= 0", name="image_price"),
        CheckConstraint("audio_second_price IS NULL OR audio_second_price >= 0", name="audio_second_price"),
        CheckConstraint("speech_price IS NULL OR speech_price >= 0", name="speech_price"),
        CheckConstraint("request_price IS NULL OR request_price >= 0", name="request_price"),
    )

    model: Mapped[str] = mapped_column(String(100))
    prompt_price: Mapped[int] = mapped_column(BigInteger)
    completion_price: Mapped[int] = mapped_column(BigInteger)
    # A prompt token read from the provider's cache, and one written to it; NULL: billed at the prompt price.
    cached_prompt_price: Mapped[int | None] = mapped_column(BigInteger)
    cache_write_price: Mapped[int | None] = mapped_column(BigInteger)
    # Endpoints not billed by the token: credits per image generated, per second of audio transcribed, per
    # million characters spoken, per request (moderation). NULL: the model is not priced for that endpoint.
    image_price: Mapped[int | None] = mapped_column(BigInteger)
    audio_second_price: Mapped[int | None] = mapped_column(BigInteger)
    speech_price: Mapped[int | None] = mapped_column(BigInteger)
    request_price: Mapped[int | None] = mapped_column(BigInteger)


class ModelAlias(TenantOwned, UpdatedAt, Base):
    """A name a client may call (`smart`) for an ordered list of served models, tried in turn."""

    __tablename__ = "provider_model_aliases"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uk_provider_model_aliases_name"),)

    name: Mapped[str] = mapped_column(String(100))
    models: Mapped[list[str]] = mapped_column(JSONB)


class ModelRouting(TenantOwned, UpdatedAt, Base):
    """How the gateway orders a model's channels; a model without a row is routed by priority and weight."""

    __tablename__ = "provider_model_routing"
    __table_args__ = (
        UniqueConstraint("tenant_id", "model", name="uk_provider_model_routing_model"),
        CheckConstraint(f"strategy IN {ROUTING_STRATEGIES}", name="strategy"),
    )

    model: Mapped[str] = mapped_column(String(100))
    strategy: Mapped[str] = mapped_column(String(20))


class StoredResponse(TenantOwned, Base):
    """A Responses API answer kept for `GET /v1/responses/{id}` and `previous_response_id`, until `expires_at`.

    Only the API key that created it sees it. No foreign key to the key: a revoked key's responses are out of
    everyone's reach and go at their expiry, like the rest."""

    __tablename__ = "provider_responses"
    __table_args__ = (
        UniqueConstraint("tenant_id", "response_id", name="uk_provider_responses_response_id"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_provider_responses_user",
        ),
        Index("idx_provider_responses_tenant_expires", "tenant_id", "expires_at"),
    )

    # The public id, `resp_<32 hex>`.
    response_id: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[UUID]
    user_id: Mapped[UUID]
    model: Mapped[str] = mapped_column(String(200))
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    # This turn's input items, each with its id (`msg_…`, `fc_…`), as `GET …/input_items` lists them.
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # The Response object as the client got it.
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class UsageLog(TenantOwned, Base):
    """One served (or refused upstream) call. No foreign keys: the record outlives its token and channel.

    Partitioned by month on `created_at` (migration 0028): the partition key is in the primary key, so a call
    is known by (tenant_id, created_at, id); the ORM still identifies it by `id` alone, which is unique."""

    __tablename__ = "provider_usage_logs"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "created_at", "id", name="pk_provider_usage_logs"),
        Index("idx_usage_logs_tenant_token_created", "tenant_id", "token_id", text("created_at DESC")),
        Index("idx_usage_logs_tenant_user_created", "tenant_id", "user_id", "created_at"),
        # A call's page finds it by id alone, which the primary key (partition key first) cannot serve.
        Index("idx_usage_logs_tenant_id", "tenant_id", "id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )
    __mapper_args__ = {"primary_key": ["id"]}

    tenant_id: Mapped[UUID] = mapped_column(
        ForeignKey("tenant_organizations.id", ondelete="CASCADE"), primary_key=True, sort_order=-99
    )
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, default=utc_now, server_default=func.now(), sort_order=3000
    )

    user_id: Mapped[UUID | None]
    token_id: Mapped[UUID | None]
    channel_id: Mapped[UUID | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(30))
    model: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    # Of the prompt tokens: read from the provider's prompt cache, and written to it.
    cached_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    cost: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Credits the provider's reported usage cost beyond the reservation: not charged (the key never pays
    # more than it reserved), recorded so that the difference is never silently lost.
    overshoot: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    latency_ms: Mapped[int] = mapped_column(default=0, server_default="0")
    upstream_latency_ms: Mapped[int | None]
    status_code: Mapped[int] = mapped_column(default=200, server_default="200")
    # ok, client_disconnected, upstream_cut, upstream_error, ...
    outcome: Mapped[str] = mapped_column(String(30), default="ok", server_default="ok")
    stream: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


# What a rollup row sums the calls of: one model's, one user's, one key's, or one user's of one model. One
# row per (period, kind, value) and not per (period, key, user, model, channel): at a few thousand calls an
# hour across hundreds of keys, every call is nearly its own combination of all of them, and such a rollup
# would be as big as the log (docs/performance.md, "Usage log at scale").
ROLLUP_KINDS = ("model", "user", "key", "user_model")
# Stands for "none" in a rollup's key columns (a call without a user or key, or a kind not grouped by it):
# a primary key column cannot be NULL.
NO_ID = UUID(int=0)


class _UsageRollup:
    """Sums of the usage log per period, written by the flusher in the transaction that writes the calls."""

    __table_args__: Any
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenant_organizations.id", ondelete="CASCADE"), sort_order=-99)
    start: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(10))
    user_id: Mapped[UUID]
    token_id: Mapped[UUID]
    model: Mapped[str] = mapped_column(String(100))
    calls: Mapped[int] = mapped_column(BigInteger)
    # Calls whose client got anything but a 2xx (CALL_FAILED in app/gateway/admin.py).
    errors: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[int] = mapped_column(BigInteger)
    overshoot: Mapped[int] = mapped_column(BigInteger)
    latency_ms_sum: Mapped[int] = mapped_column(BigInteger)


def _rollup_keys(table: str) -> tuple[Any, ...]:
    return (
        PrimaryKeyConstraint("tenant_id", "kind", "start", "user_id", "token_id", "model", name=f"pk_{table}"),
        # One user's figures (their dashboard, their month) without reading every user's.
        Index(f"idx_{table}_tenant_user", "tenant_id", "user_id", "kind", "start"),
        CheckConstraint(f"kind IN {ROLLUP_KINDS}", name="kind"),
    )


class UsageHourly(_UsageRollup, DefaultBase):
    __tablename__ = "provider_usage_hourly"
    __table_args__ = _rollup_keys(__tablename__)


class UsageDaily(_UsageRollup, DefaultBase):
    __tablename__ = "provider_usage_daily"
    __table_args__ = _rollup_keys(__tablename__)
