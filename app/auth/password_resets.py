"""One-time password reset links: an administrator (or `lyss admin reset-password`) issues one, the user opens it."""

from __future__ import annotations

import datetime
from uuid import UUID

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.tokens import new_opaque_token, token_hash
from app.observability.middleware import ClientContext
from app.tenants.services import ProvisioningError, lookup_tenant_by_slug, normalize_email, record_audit_event
from db.auth import PasswordReset, User
from db.base import utc_now
from db.session import tenant_session

PASSWORD_RESET_KIND = "lrst"
PASSWORD_RESET_TTL = datetime.timedelta(hours=24)
RESET_PATH = "/portal/reset"


class IssuedPasswordReset(msgspec.Struct, frozen=True):
    """A reset link, shown once: only its token's hash is kept."""

    user_id: UUID
    email: str
    url: str
    expires_at: datetime.datetime


def reset_url(public_url: str, token: str) -> str:
    return f"{public_url}{RESET_PATH}/{token}"


async def add_password_reset(
    session: AsyncSession,
    user: User,
    *,
    public_url: str,
    actor: str,
    actor_user_id: UUID | None,
    client: ClientContext | None,
) -> IssuedPasswordReset:
    """A new link for `user` (their earlier unused links stop working), audited; the caller commits."""
    # One live link per user: the admin who issues a second one means the first to be forgotten.
    await session.execute(
        delete(PasswordReset).where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
    )
    token = new_opaque_token(PASSWORD_RESET_KIND, user.tenant_id)
    expires_at = utc_now() + PASSWORD_RESET_TTL
    reset = PasswordReset(user_id=user.id, token_hash=token_hash(token), issued_by=actor_user_id, expires_at=expires_at)
    session.add(reset)
    await session.flush()
    record_audit_event(
        session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="user.password_reset_issued",
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "reset_id": str(reset.id), "expires_at": expires_at.isoformat()},
        client=client,
    )
    return IssuedPasswordReset(
        user_id=user.id, email=user.email, url=reset_url(public_url, token), expires_at=expires_at
    )


async def issue_password_reset_by_email(
    session_maker: async_sessionmaker[AsyncSession], *, tenant_slug: str, email: str, public_url: str, actor: str
) -> IssuedPasswordReset:
    """For the CLI: a reset link for the user with `email` in the tenant named by its slug."""
    email = normalize_email(email)
    async with session_maker() as lookup_session:
        tenant = await lookup_tenant_by_slug(lookup_session, tenant_slug)
    if tenant is None:
        raise ProvisioningError(f"no tenant has the slug '{tenant_slug}'")
    async with tenant_session(session_maker, tenant.id) as session:
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            raise ProvisioningError(f"no user has the email '{email}' in tenant '{tenant_slug}'")
        issued = await add_password_reset(
            session, user, public_url=public_url, actor=actor, actor_user_id=None, client=None
        )
        await session.commit()
    return issued
