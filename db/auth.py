"""Tables of the `auth_` prefix: users, their sessions, OAuth providers and linked external accounts."""

from __future__ import annotations

import datetime
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TenantOwned, UpdatedAt

USER_ROLES = ("super_admin", "tenant_admin", "end_user")
USER_STATUSES = ("active", "inactive", "suspended")
SESSION_KINDS = ("api", "portal")
OAUTH_PROVIDER_KINDS = ("oidc", "github", "google")
# Columns holding values encrypted by app.encryption carry this in their `info`; `lyss keys rotate`
# finds them through it.
ENCRYPTED = {"encrypted": True}


class User(TenantOwned, UpdatedAt, Base):
    """A person in one tenant. The same email may exist in several tenants, as different users."""

    __tablename__ = "auth_users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email", name="uk_auth_users_tenant_email"),
        UniqueConstraint("tenant_id", "username", name="uk_auth_users_tenant_username"),
        CheckConstraint(f"role IN {USER_ROLES}", name="role"),
        CheckConstraint(f"status IN {USER_STATUSES}", name="status"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("login_attempts >= 0", name="login_attempts"),
        Index("idx_auth_users_tenant_status", "tenant_id", "status"),
        Index("idx_auth_users_tenant_role", "tenant_id", "role"),
    )

    email: Mapped[str] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(100))
    # NULL for accounts that only ever sign in through OAuth.
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20), default="end_user", server_default="end_user")
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    last_login_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    login_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_until: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    mfa_enabled: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # Encrypted at rest (app.encryption); set at enrolment, live once `mfa_enabled` is true.
    mfa_secret: Mapped[str | None] = mapped_column(Text, info=ENCRYPTED)
    # The TOTP time step of the last accepted code: a code of that step or earlier is a replay.
    mfa_last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    password_changed_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class UserSession(TenantOwned, UpdatedAt, Base):
    """One issued credential of a login. The tokens themselves are never stored, only their SHA-256.

    An API login is a family of rows: each refresh ends the presented row (`rotated`) and adds the next;
    presenting a rotated refresh token again ends the whole family. A portal login is one row holding
    the hash of its cookie.
    """

    __tablename__ = "auth_user_sessions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "session_token_hash", name="uk_auth_sessions_session_token"),
        UniqueConstraint("tenant_id", "refresh_token_hash", name="uk_auth_sessions_refresh_token"),
        CheckConstraint(f"kind IN {SESSION_KINDS}", name="kind"),
        CheckConstraint(
            "(kind = 'api' AND refresh_token_hash IS NOT NULL) OR (kind = 'portal' AND session_token_hash IS NOT NULL)",
            name="token_of_kind",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_auth_sessions_user",
        ),
        Index("idx_auth_sessions_user_id", "tenant_id", "user_id"),
        Index("idx_auth_sessions_family", "tenant_id", "family_id"),
        Index("idx_auth_sessions_expires", "expires_at"),
    )

    user_id: Mapped[UUID]
    family_id: Mapped[UUID]
    kind: Mapped[str] = mapped_column(String(10))
    session_token_hash: Mapped[str | None] = mapped_column(String(64))
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    refresh_expires_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    # NULL while usable; otherwise when and why it stopped (rotated, logout, logout_all, refresh_reuse, ...).
    ended_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_reason: Mapped[str | None] = mapped_column(String(30))


class RecoveryCode(TenantOwned, Base):
    """A single-use MFA recovery code, stored as SHA-256 (80 random bits: not guessable offline)."""

    __tablename__ = "auth_mfa_recovery_codes"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "code_hash", name="uk_auth_recovery_codes_user_code"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_auth_recovery_codes_user",
        ),
    )

    user_id: Mapped[UUID]
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class Invitation(TenantOwned, Base):
    """An admin's invitation; the user row is created only when it is accepted."""

    __tablename__ = "auth_invitations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "token_hash", name="uk_auth_invitations_token"),
        CheckConstraint(f"role IN {USER_ROLES}", name="role"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        ForeignKeyConstraint(
            ["tenant_id", "invited_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (invited_by)",
            name="fk_auth_invitations_invited_by",
        ),
        Index("idx_auth_invitations_email", "tenant_id", "email"),
    )

    email: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64))
    invited_by: Mapped[UUID | None]
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthProvider(TenantOwned, UpdatedAt, Base):
    __tablename__ = "auth_oauth_providers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider_name", name="uk_auth_oauth_tenant_provider"),
        CheckConstraint(f"kind IN {OAUTH_PROVIDER_KINDS}", name="kind"),
        CheckConstraint("kind <> 'oidc' OR discovery_url IS NOT NULL", name="oidc_discovery"),
    )

    provider_name: Mapped[str] = mapped_column(String(50))
    display_name: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="oidc", server_default="oidc")
    # OpenID Connect discovery document; the github preset has fixed endpoints, google a fixed document.
    discovery_url: Mapped[str | None] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(String(255))
    encrypted_client_secret: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    redirect_uri: Mapped[str] = mapped_column(String(500))
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(Text),
        default=lambda: ["openid", "profile", "email"],
        server_default=text("ARRAY['openid', 'profile', 'email']"),
    )
    is_enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))


class OAuthConnection(TenantOwned, UpdatedAt, Base):
    """An external account linked to a user. Lyss keeps the identity only, never the provider's tokens."""

    __tablename__ = "auth_oauth_connections"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider_id", "external_id", name="uk_auth_oauth_provider_external"),
        UniqueConstraint("tenant_id", "provider_id", "user_id", name="uk_auth_oauth_provider_user"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_auth_oauth_user",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "provider_id"],
            ["auth_oauth_providers.tenant_id", "auth_oauth_providers.id"],
            ondelete="CASCADE",
            name="fk_auth_oauth_provider",
        ),
        Index("idx_auth_oauth_connections_user", "tenant_id", "user_id"),
    )

    user_id: Mapped[UUID]
    provider_id: Mapped[UUID]
    external_id: Mapped[str] = mapped_column(String(255))
    external_email: Mapped[str | None] = mapped_column(String(255))
    external_username: Mapped[str | None] = mapped_column(String(255))
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))


class PasswordReset(TenantOwned, Base):
    """A one-time link an admin hands to a user to set a new password; only the token's hash is kept."""

    __tablename__ = "auth_password_resets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "token_hash", name="uk_auth_password_resets_token"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_auth_password_resets_user",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "issued_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (issued_by)",
            name="fk_auth_password_resets_issued_by",
        ),
        Index("idx_auth_password_resets_user", "tenant_id", "user_id"),
    )

    user_id: Mapped[UUID]
    token_hash: Mapped[str] = mapped_column(String(64))
    issued_by: Mapped[UUID | None]
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
