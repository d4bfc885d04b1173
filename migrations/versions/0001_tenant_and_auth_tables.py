"""tenant and auth tables

Revision ID: 0001
Revises:
Create Date: 2026-11-22 10:38:14.808131
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_organizations",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("subscription_plan", sa.String(length=50), server_default="basic", nullable=False),
        sa.Column("max_users", sa.Integer(), server_default="10", nullable=False),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$'",
            name=op.f("ck_tenant_organizations_slug_format"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'inactive')", name=op.f("ck_tenant_organizations_status")
        ),
        sa.CheckConstraint("max_users > 0", name=op.f("ck_tenant_organizations_max_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenant_organizations_slug")),
    )
    op.create_index("idx_tenant_orgs_status", "tenant_organizations", ["status"], unique=False)
    op.create_table(
        "auth_oauth_providers",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("provider_name", sa.String(length=50), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("encrypted_client_secret", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.String(length=500), nullable=False),
        sa.Column(
            "scopes",
            sa.ARRAY(sa.Text()),
            server_default=sa.text("ARRAY['openid', 'profile', 'email']"),
            nullable=False,
        ),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_oauth_providers_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_oauth_providers")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_auth_oauth_providers_tenant_id_id"),
        sa.UniqueConstraint("tenant_id", "provider_name", name="uk_auth_oauth_tenant_provider"),
    )
    op.create_table(
        "auth_users",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=True),
        sa.Column("hashed_password", sa.String(length=255), nullable=True),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("avatar_url", sa.Text(), nullable=True),
        sa.Column("role", sa.String(length=20), server_default="end_user", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("email_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("login_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mfa_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("mfa_secret", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('super_admin', 'tenant_admin', 'end_user')", name=op.f("ck_auth_users_role")),
        sa.CheckConstraint("status IN ('active', 'inactive', 'suspended')", name=op.f("ck_auth_users_status")),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_auth_users_email_lowercase")),
        sa.CheckConstraint("login_attempts >= 0", name=op.f("ck_auth_users_login_attempts")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_users_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_users")),
        sa.UniqueConstraint("tenant_id", "email", name="uk_auth_users_tenant_email"),
        sa.UniqueConstraint("tenant_id", "id", name="uk_auth_users_tenant_id_id"),
        sa.UniqueConstraint("tenant_id", "username", name="uk_auth_users_tenant_username"),
    )
    op.create_index("idx_auth_users_tenant_role", "auth_users", ["tenant_id", "role"], unique=False)
    op.create_index("idx_auth_users_tenant_status", "auth_users", ["tenant_id", "status"], unique=False)
    op.create_table(
        "tenant_audit_events",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=50), nullable=True),
        sa.Column("target_id", sa.String(length=100), nullable=True),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_audit_events_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_audit_events")),
    )
    op.create_index(
        "idx_tenant_audit_events_tenant_created",
        "tenant_audit_events",
        ["tenant_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "auth_oauth_connections",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("external_email", sa.String(length=255), nullable=True),
        sa.Column("external_username", sa.String(length=255), nullable=True),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "provider_id"],
            ["auth_oauth_providers.tenant_id", "auth_oauth_providers.id"],
            name="fk_auth_oauth_provider",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_oauth_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_oauth_connections_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_oauth_connections")),
        sa.UniqueConstraint("tenant_id", "provider_id", "external_id", name="uk_auth_oauth_provider_external"),
    )
    op.create_index("idx_auth_oauth_connections_user", "auth_oauth_connections", ["tenant_id", "user_id"], unique=False)
    op.create_table(
        "auth_user_sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("session_token_hash", sa.String(length=64), nullable=False),
        sa.Column("refresh_token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_sessions_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_user_sessions_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_user_sessions")),
        sa.UniqueConstraint("tenant_id", "refresh_token_hash", name="uk_auth_sessions_refresh_token"),
        sa.UniqueConstraint("tenant_id", "session_token_hash", name="uk_auth_sessions_session_token"),
    )
    op.create_index("idx_auth_sessions_expires", "auth_user_sessions", ["expires_at"], unique=False)
    op.create_index("idx_auth_sessions_user_id", "auth_user_sessions", ["tenant_id", "user_id"], unique=False)
    op.create_table(
        "tenant_user_groups",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_tenant_user_groups_created_by",
            ondelete="SET NULL (created_by)",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_user_groups_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_user_groups")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_tenant_user_groups_tenant_id_id"),
        sa.UniqueConstraint("tenant_id", "name", name="uk_tenant_user_groups_tenant_name"),
    )
    op.create_table(
        "tenant_user_group_members",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="member", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_tenant_user_group_members_role")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            name="fk_tenant_group_members_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_tenant_group_members_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_tenant_user_group_members_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_user_group_members")),
        sa.UniqueConstraint("tenant_id", "group_id", "user_id", name="uk_tenant_group_members_group_user"),
    )
    op.create_index(
        "idx_tenant_group_members_user", "tenant_user_group_members", ["tenant_id", "user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("idx_tenant_group_members_user", table_name="tenant_user_group_members")
    op.drop_table("tenant_user_group_members")
    op.drop_table("tenant_user_groups")
    op.drop_index("idx_auth_sessions_user_id", table_name="auth_user_sessions")
    op.drop_index("idx_auth_sessions_expires", table_name="auth_user_sessions")
    op.drop_table("auth_user_sessions")
    op.drop_index("idx_auth_oauth_connections_user", table_name="auth_oauth_connections")
    op.drop_table("auth_oauth_connections")
    op.drop_index("idx_tenant_audit_events_tenant_created", table_name="tenant_audit_events")
    op.drop_table("tenant_audit_events")
    op.drop_index("idx_auth_users_tenant_status", table_name="auth_users")
    op.drop_index("idx_auth_users_tenant_role", table_name="auth_users")
    op.drop_table("auth_users")
    op.drop_table("auth_oauth_providers")
    op.drop_index("idx_tenant_orgs_status", table_name="tenant_organizations")
    op.drop_table("tenant_organizations")
