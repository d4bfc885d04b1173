"""sessions families, MFA recovery codes, invitations, OAuth provider kinds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 11:13:54.510768
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_invitations",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "role IN ('super_admin', 'tenant_admin', 'end_user')", name=op.f("ck_auth_invitations_role")
        ),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_auth_invitations_email_lowercase")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "invited_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_invitations_invited_by",
            ondelete="SET NULL (invited_by)",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_invitations_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_invitations")),
        sa.UniqueConstraint("tenant_id", "token_hash", name="uk_auth_invitations_token"),
    )
    op.create_index("idx_auth_invitations_email", "auth_invitations", ["tenant_id", "email"], unique=False)
    op.create_table(
        "auth_mfa_recovery_codes",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_auth_recovery_codes_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_auth_mfa_recovery_codes_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_mfa_recovery_codes")),
        sa.UniqueConstraint("tenant_id", "user_id", "code_hash", name="uk_auth_recovery_codes_user_code"),
    )
    op.create_unique_constraint(
        "uk_auth_oauth_provider_user", "auth_oauth_connections", ["tenant_id", "provider_id", "user_id"]
    )
    op.drop_column("auth_oauth_connections", "token_expires_at")
    op.drop_column("auth_oauth_connections", "refresh_token")
    op.drop_column("auth_oauth_connections", "access_token")
    op.add_column("auth_oauth_providers", sa.Column("display_name", sa.String(length=100), nullable=True))
    op.add_column(
        "auth_oauth_providers", sa.Column("kind", sa.String(length=20), server_default="oidc", nullable=False)
    )
    op.add_column("auth_oauth_providers", sa.Column("discovery_url", sa.Text(), nullable=True))
    # Existing rows become one-row API families. The owner is subject to FORCE ROW LEVEL SECURITY and
    # would see no row to update: lift FORCE for this transaction only (policies/ restores it before
    # the upgrade commits, and the catalog test checks it).
    op.execute("ALTER TABLE auth_user_sessions NO FORCE ROW LEVEL SECURITY")
    op.add_column("auth_user_sessions", sa.Column("family_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE auth_user_sessions SET family_id = id")
    op.alter_column("auth_user_sessions", "family_id", nullable=False)
    op.add_column("auth_user_sessions", sa.Column("kind", sa.String(length=10), server_default="api", nullable=False))
    op.alter_column("auth_user_sessions", "kind", server_default=None)
    op.execute("ALTER TABLE auth_user_sessions FORCE ROW LEVEL SECURITY")
    op.add_column("auth_user_sessions", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("auth_user_sessions", sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("auth_user_sessions", sa.Column("ended_reason", sa.String(length=30), nullable=True))
    op.alter_column("auth_user_sessions", "session_token_hash", existing_type=sa.VARCHAR(length=64), nullable=True)
    op.alter_column("auth_user_sessions", "refresh_token_hash", existing_type=sa.VARCHAR(length=64), nullable=True)
    op.create_check_constraint(op.f("ck_auth_user_sessions_kind"), "auth_user_sessions", "kind IN ('api', 'portal')")
    op.create_check_constraint(
        op.f("ck_auth_user_sessions_token_of_kind"),
        "auth_user_sessions",
        "(kind = 'api' AND refresh_token_hash IS NOT NULL) OR (kind = 'portal' AND session_token_hash IS NOT NULL)",
    )
    op.create_index("idx_auth_sessions_family", "auth_user_sessions", ["tenant_id", "family_id"], unique=False)
    op.drop_column("auth_user_sessions", "is_active")
    op.create_check_constraint(
        op.f("ck_auth_oauth_providers_kind"), "auth_oauth_providers", "kind IN ('oidc', 'github', 'google')"
    )
    op.create_check_constraint(
        op.f("ck_auth_oauth_providers_oidc_discovery"),
        "auth_oauth_providers",
        "kind <> 'oidc' OR discovery_url IS NOT NULL",
    )
    op.add_column("auth_users", sa.Column("mfa_last_used_step", sa.BigInteger(), nullable=True))
    op.add_column("auth_users", sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("auth_users", "password_changed_at")
    op.drop_column("auth_users", "mfa_last_used_step")
    op.add_column(
        "auth_user_sessions",
        sa.Column("is_active", sa.BOOLEAN(), server_default=sa.text("true"), autoincrement=False, nullable=False),
    )
    op.drop_constraint(op.f("ck_auth_oauth_providers_oidc_discovery"), "auth_oauth_providers", type_="check")
    op.drop_constraint(op.f("ck_auth_oauth_providers_kind"), "auth_oauth_providers", type_="check")
    op.drop_constraint(op.f("ck_auth_user_sessions_token_of_kind"), "auth_user_sessions", type_="check")
    op.drop_constraint(op.f("ck_auth_user_sessions_kind"), "auth_user_sessions", type_="check")
    op.drop_index("idx_auth_sessions_family", table_name="auth_user_sessions")
    op.alter_column("auth_user_sessions", "refresh_token_hash", existing_type=sa.VARCHAR(length=64), nullable=False)
    op.alter_column("auth_user_sessions", "session_token_hash", existing_type=sa.VARCHAR(length=64), nullable=False)
    op.drop_column("auth_user_sessions", "ended_reason")
    op.drop_column("auth_user_sessions", "ended_at")
    op.drop_column("auth_user_sessions", "last_used_at")
    op.drop_column("auth_user_sessions", "kind")
    op.drop_column("auth_user_sessions", "family_id")
    op.drop_column("auth_oauth_providers", "discovery_url")
    op.drop_column("auth_oauth_providers", "kind")
    op.drop_column("auth_oauth_providers", "display_name")
    op.add_column("auth_oauth_connections", sa.Column("access_token", sa.TEXT(), autoincrement=False, nullable=True))
    op.add_column("auth_oauth_connections", sa.Column("refresh_token", sa.TEXT(), autoincrement=False, nullable=True))
    op.add_column(
        "auth_oauth_connections",
        sa.Column("token_expires_at", postgresql.TIMESTAMP(timezone=True), autoincrement=False, nullable=True),
    )
    op.drop_constraint("uk_auth_oauth_provider_user", "auth_oauth_connections", type_="unique")
    op.drop_table("auth_mfa_recovery_codes")
    op.drop_index("idx_auth_invitations_email", table_name="auth_invitations")
    op.drop_table("auth_invitations")
