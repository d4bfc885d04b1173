"""Request and response bodies of the tenants domain."""

from __future__ import annotations

import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from app.schemas import Input


class OrganizationRead(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    slug: str
    status: str
    subscription_plan: str
    max_users: int
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


class TenantPolicyRead(msgspec.Struct, frozen=True):
    require_mfa_for_admins: bool
    allow_self_signup: bool


class TenantPolicyUpdate(Input):
    """Fields left out keep their value."""

    require_mfa_for_admins: bool | None = None
    allow_self_signup: bool | None = None


class OrganizationRename(Input):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
