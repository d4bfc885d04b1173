"""Tables of the `tenant_` prefix (organizations, groups, audit log, jobs, webhooks) and the catalogue of plans."""

from __future__ import annotations

import datetime
from typing import Any, Literal, get_args
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.auth import ENCRYPTED
from db.base import Base, TenantOwned, UpdatedAt

ORGANIZATION_STATUSES = ("active", "suspended", "inactive")
GROUP_MEMBER_ROLES = ("admin", "member")
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"


class Plan(DefaultBase):
    """What an organization on this plan may have (platform-wide catalogue, read-only to the service).

    Every limit is a count where -1 means none; `allowed_provider_types` empty means every type.
    """

    __tablename__ = "platform_plans"
    __table_args__ = (
        CheckConstraint("max_users = -1 OR max_users > 0", name="max_users"),
        CheckConstraint("max_channels >= -1", name="max_channels"),
        CheckConstraint("max_api_keys_per_user >= -1", name="max_api_keys_per_user"),
        CheckConstraint("default_monthly_budget >= -1", name="default_monthly_budget"),
    )

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    max_users: Mapped[int]
    # Credits; becomes the organization's `quota` when a tenant is created on the plan.
    default_monthly_budget: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    allowed_provider_types: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'::text[]")
    )
    max_channels: Mapped[int]
    max_api_keys_per_user: Mapped[int]
    # Switches such as {"memory": true, "knowledge_bases": true}; a feature not named is on.
    features: Mapped[dict[str, bool]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


class Organization(UpdatedAt, Base):
    """A tenant. Under row-level security keyed by its own `id`: a tenant sees only its own row."""

    __tablename__ = "tenant_organizations"
    __table_args__ = (
        CheckConstraint(f"status IN {ORGANIZATION_STATUSES}", name="status"),
        CheckConstraint(f"slug ~ '{SLUG_PATTERN}'", name="slug_format"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        Index("idx_tenant_orgs_status", "status"),
    )

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    # The plan's limits apply (`platform_plans`); its max_users is the organization's.
    subscription_plan: Mapped[str] = mapped_column(
        String(50),
        ForeignKey("platform_plans.name", onupdate="CASCADE", name="fk_tenant_organizations_subscription_plan"),
        default="basic",
        server_default="basic",
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    # The tenant's gateway budget in credits (micro-units of currency); -1: no limit.
    quota: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    used_quota: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # ISO 4217 code amounts are shown and entered in; a credit is a millionth of it.
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")


class UserGroup(TenantOwned, UpdatedAt, Base):
    __tablename__ = "tenant_user_groups"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uk_tenant_user_groups_tenant_name"),
        # Composite keys: a row can only ever point at rows of its own tenant, whatever RLS lets it see.
        ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (created_by)",
            name="fk_tenant_user_groups_created_by",
        ),
    )

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[UUID | None]


class UserGroupMember(TenantOwned, Base):
    __tablename__ = "tenant_user_group_members"
    __table_args__ = (
        UniqueConstraint("tenant_id", "group_id", "user_id", name="uk_tenant_group_members_group_user"),
        CheckConstraint(f"role IN {GROUP_MEMBER_ROLES}", name="role"),
        ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            ondelete="CASCADE",
            name="fk_tenant_group_members_group",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_tenant_group_members_user",
        ),
        Index("idx_tenant_group_members_user", "tenant_id", "user_id"),
    )

    group_id: Mapped[UUID]
    user_id: Mapped[UUID]
    role: Mapped[str] = mapped_column(String(20), default="member", server_default="member")


BUDGET_KINDS = ("user", "group", "new_user")
BUDGET_PERIODS = ("none", "daily", "weekly", "monthly")
# What a budget row says of its subject (the rest is its counters).
BUDGET_POLICY_FIELDS = (
    "quota",
    "budget_period",
    "rpm_limit",
    "tpm_limit",
    "max_concurrent",
    "max_streams",
    "allowed_models",
)


class Budget(TenantOwned, UpdatedAt, Base):
    """What a person or a group may spend through the gateway, and how fast; and what they have spent.

    A user's keys draw on the user's budget and on each of their groups'; a key's own limits can only
    narrow these. `new_user` (one per tenant) is copied to each account made after it is set. A user's or
    group's row is made by the first call it pays for, so its spend is counted even while it has no limit.
    """

    __tablename__ = "tenant_budgets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", name="uk_tenant_budgets_user"),
        UniqueConstraint("tenant_id", "group_id", name="uk_tenant_budgets_group"),
        Index("uk_tenant_budgets_new_user", "tenant_id", unique=True, postgresql_where=text("kind = 'new_user'")),
        CheckConstraint(f"kind IN {BUDGET_KINDS}", name="kind"),
        CheckConstraint(
            "(kind = 'user') = (user_id IS NOT NULL) AND (kind = 'group') = (group_id IS NOT NULL)", name="subject"
        ),
        CheckConstraint(f"budget_period IN {BUDGET_PERIODS}", name="budget_period"),
        CheckConstraint("quota >= -1 AND used_quota >= 0", name="quota"),
        CheckConstraint("rpm_limit >= 0 AND tpm_limit >= 0", name="limits"),
        CheckConstraint("max_concurrent >= 0 AND max_streams >= 0", name="concurrency"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_tenant_budgets_user",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            ondelete="CASCADE",
            name="fk_tenant_budgets_group",
        ),
    )

    kind: Mapped[str] = mapped_column(String(10))
    user_id: Mapped[UUID | None]
    group_id: Mapped[UUID | None]
    # Credits (micro-units of the currency) per period; -1: no limit.
    quota: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    used_quota: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    budget_period: Mapped[str] = mapped_column(String(10), default="none", server_default="none")
    budget_reset_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.datetime.now(datetime.UTC), server_default=text("now()")
    )
    rpm_limit: Mapped[int] = mapped_column(default=0, server_default="0")
    tpm_limit: Mapped[int] = mapped_column(default=0, server_default="0")
    # Requests (and, of those, streams) in flight at once, for a user; 0: no limit.
    max_concurrent: Mapped[int] = mapped_column(default=0, server_default="0")
    max_streams: Mapped[int] = mapped_column(default=0, server_default="0")
    # Empty: every model.
    allowed_models: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))


class AuditEvent(TenantOwned, Base):
    """Append-only: the app role may insert and read, never update or delete."""

    __tablename__ = "tenant_audit_events"
    __table_args__ = (Index("idx_tenant_audit_events_tenant_created", "tenant_id", text("created_at DESC")),)

    # No foreign key on the actor: the trail must outlive the user it mentions.
    actor_user_id: Mapped[UUID | None]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(100))
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "dead"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
JOB_TERMINAL_STATUSES = ("succeeded", "failed", "canceled", "dead")


class Job(TenantOwned, UpdatedAt, Base):
    """A unit of background work, durable: PostgreSQL says what happened; SAQ only carries it to a worker."""

    __tablename__ = "tenant_jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "idempotency_key", name="uk_tenant_jobs_idempotency"),
        CheckConstraint(f"status IN {JOB_STATUSES}", name="status"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (created_by)",
            name="fk_tenant_jobs_created_by",
        ),
        Index("idx_tenant_jobs_tenant_created", "tenant_id", text("created_at DESC")),
        Index("idx_tenant_jobs_status", "status", "updated_at"),
    )

    kind: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    progress: Mapped[int] = mapped_column(default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(default=3, server_default="3")
    timeout_seconds: Mapped[int] = mapped_column(default=600, server_default="600")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[UUID | None]
    # The SAQ job carrying the current attempt series (a retry gets a new one).
    queue_key: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by a cancel request; a running job stops at its next checkpoint.
    cancel_requested_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class JobEvent(TenantOwned, Base):
    """What happened to a job, in order: queued, started, progress, retrying, failed, canceled, ... (append-only)."""

    __tablename__ = "tenant_job_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["tenant_jobs.tenant_id", "tenant_jobs.id"],
            ondelete="CASCADE",
            name="fk_tenant_job_events_job",
        ),
        Index("idx_tenant_job_events_job", "tenant_id", "job_id", "created_at"),
    )

    job_id: Mapped[UUID]
    event: Mapped[str] = mapped_column(String(30))
    attempt: Mapped[int] = mapped_column(default=0, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


WEBHOOK_OUTCOMES = ("delivered", "failed")


class WebhookEndpoint(TenantOwned, UpdatedAt, Base):
    """Where a tenant wants its events posted, signed with a secret only it and Lyss know."""

    __tablename__ = "tenant_webhook_endpoints"
    __table_args__ = (Index("idx_tenant_webhook_endpoints_tenant", "tenant_id"),)

    url: Mapped[str] = mapped_column(Text)
    # The HMAC key of the signature header, encrypted at rest (shown to the admin once).
    encrypted_secret: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    description: Mapped[str | None] = mapped_column(String(500))


class WebhookDelivery(TenantOwned, Base):
    """One attempt to post one event to one endpoint (append-only): what was sent and what came back."""

    __tablename__ = "tenant_webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"outcome IN {WEBHOOK_OUTCOMES}", name="outcome"),
        CheckConstraint("attempt >= 1", name="attempt"),
        ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["tenant_webhook_endpoints.tenant_id", "tenant_webhook_endpoints.id"],
            ondelete="CASCADE",
            name="fk_tenant_webhook_deliveries_endpoint",
        ),
        Index("idx_tenant_webhook_deliveries_endpoint", "tenant_id", "endpoint_id", text("created_at DESC")),
        # An event reaches an endpoint once: a second success of the same event cannot be recorded.
        Index(
            "uk_tenant_webhook_deliveries_delivered",
            "tenant_id",
            "endpoint_id",
            "event_id",
            unique=True,
            postgresql_where=text("outcome = 'delivered'"),
        ),
    )

    endpoint_id: Mapped[UUID]
    event_id: Mapped[UUID]
    event_kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempt: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None]
    # The start of the receiver's answer, at most 500 characters.
    response_excerpt: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None]
