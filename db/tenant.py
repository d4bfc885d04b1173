"""Tables of the `tenant_` prefix: organizations, user groups and their members, the audit log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, CheckConstraint, ForeignKeyConstraint, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TenantOwned, UpdatedAt

ORGANIZATION_STATUSES = ("active", "suspended", "inactive")
GROUP_MEMBER_ROLES = ("admin", "member")
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"


class Organization(UpdatedAt, Base):
    """A tenant. Under row-level security keyed by its own `id`: a tenant sees only its own row."""

    __tablename__ = "tenant_organizations"
    __table_args__ = (
        CheckConstraint(f"status IN {ORGANIZATION_STATUSES}", name="status"),
        CheckConstraint(f"slug ~ '{SLUG_PATTERN}'", name="slug_format"),
        CheckConstraint("max_users > 0", name="max_users"),
        Index("idx_tenant_orgs_status", "status"),
    )

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    subscription_plan: Mapped[str] = mapped_column(String(50), default="basic", server_default="basic")
    max_users: Mapped[int] = mapped_column(default=10, server_default="10")
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    # The tenant's gateway budget in credits (micro-units of currency); -1: no limit.
    quota: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    used_quota: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UserGroup(TenantOwned, UpdatedAt, Base):
    __tablename__ = "tenant_user_groups"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uk_tenant_user_groups_tenant_name"),
        UniqueConstraint("tenant_id", "id", name="uk_tenant_user_groups_tenant_id_id"),
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
