"""Request and response bodies of the tenants domain."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from app.schemas import Input
from app.tenants.money import CurrencyCode


class OrganizationRead(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    slug: str
    status: str
    subscription_plan: str
    max_users: int
    currency: str
    created_at: datetime.datetime


class UserRead(msgspec.Struct, frozen=True):
    id: UUID
    tenant_id: UUID
    email: str
    username: str | None
    full_name: str | None
    role: str
    status: str
    mfa_enabled: bool
    created_at: datetime.datetime
    last_login_at: datetime.datetime | None


class InvitationRead(msgspec.Struct, frozen=True):
    """A pending invitation (its token is never shown again: re-issue it for a new link)."""

    id: UUID
    email: str
    role: str
    invited_by: UUID | None
    created_at: datetime.datetime
    expires_at: datetime.datetime


# Days a stored Responses API answer is kept (`GET /v1/responses/{id}`, `previous_response_id`).
DEFAULT_RESPONSE_RETENTION_DAYS = 30
ResponseRetentionDays = Annotated[int, msgspec.Meta(ge=1, le=365)]
# The hosts knowledge-base documents may be fetched from by URL (app/knowledge/fetch.py); none: no URL is fetched.
MAX_KNOWLEDGE_URL_HOSTS = 50
MAX_HOST_LENGTH = 253
KnowledgeUrlHosts = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HOST_LENGTH)]],
    msgspec.Meta(max_length=MAX_KNOWLEDGE_URL_HOSTS),
]


class TenantPolicyRead(msgspec.Struct, frozen=True):
    require_mfa_for_admins: bool
    allow_self_signup: bool
    response_retention_days: int
    knowledge_url_hosts: list[str]


class TenantPolicyUpdate(Input):
    """Fields left out keep their value."""

    require_mfa_for_admins: bool | None = None
    allow_self_signup: bool | None = None
    # A new retention applies to responses stored from now on; those stored before keep their expiry.
    response_retention_days: ResponseRetentionDays | None = None
    # Exact names (docs.example.com) or every name under one (*.example.com); an empty list turns URLs off.
    knowledge_url_hosts: KnowledgeUrlHosts | None = None


class OrganizationUpdate(Input):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    # Amounts in the portal are shown and entered in it; what was counted in credits keeps its value.
    currency: CurrencyCode | None = None


# Super admins are made by the platform operator, never by a tenant's administrators.
TenantRole = Literal["end_user", "tenant_admin"]
GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]
GroupDescription = Annotated[str, msgspec.Meta(max_length=1000)]


class RoleChange(Input):
    role: TenantRole


class GroupCreate(Input):
    name: GroupName
    description: GroupDescription | None = None


class GroupUpdate(Input):
    """Fields left out keep their value."""

    name: GroupName | None = None
    description: GroupDescription | None = None


class MemberAdd(Input):
    user_id: UUID


class GroupRead(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    description: str | None
    member_count: int
    created_at: datetime.datetime


class GroupMemberRead(msgspec.Struct, frozen=True):
    user_id: UUID
    email: str
    role: str
    status: str


class GroupDetail(msgspec.Struct, frozen=True):
    group: GroupRead
    members: list[GroupMemberRead]


class UserDetail(msgspec.Struct, frozen=True):
    """A user as the organization's administrators see them, with the groups they belong to."""

    user: UserRead
    group_ids: list[UUID]


class AuditEventRead(msgspec.Struct, frozen=True):
    id: UUID
    created_at: datetime.datetime
    actor: str
    actor_user_id: UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditEventRead]
    # Pass back as `cursor` for the next (older) page; absent on the last page.
    next_cursor: str | None


WebhookEventKind = Literal["channel.auto_disabled", "channel.reenabled", "job.dead_lettered", "budget.threshold"]
WebhookUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
WebhookSecret = Annotated[str, msgspec.Meta(min_length=16, max_length=200)]
WebhookEvents = Annotated[list[WebhookEventKind], msgspec.Meta(min_length=1, max_length=10)]
WebhookDescription = Annotated[str, msgspec.Meta(max_length=500)]


class WebhookCreate(Input):
    """A new endpoint; without a `secret` Lyss makes one (shown once, in the answer)."""

    url: WebhookUrl
    events: WebhookEvents
    description: WebhookDescription | None = None
    secret: WebhookSecret | None = None
    enabled: bool = True


class WebhookUpdate(Input):
    """Fields left out keep their value; a `secret` replaces the stored one."""

    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    description: WebhookDescription | None = None
    secret: WebhookSecret | None = None
    enabled: bool | None = None


class WebhookRead(msgspec.Struct, frozen=True):
    """An endpoint as it is stored; its secret is never shown again."""

    id: UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class WebhookCreated(WebhookRead, frozen=True):
    # The signing secret, this once.
    secret: str


class WebhookDeliveryRead(msgspec.Struct, frozen=True):
    """One attempt to post one event."""

    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_kind: str
    attempt: int
    outcome: str
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_ms: int | None
    created_at: datetime.datetime


class WebhookTestSent(msgspec.Struct, frozen=True):
    """The test event's id: its attempts show in the delivery log under it."""

    event_id: UUID
