"""The organization's accounts as its administrators manage them: invitations, roles, (de)activation, MFA reset."""

from __future__ import annotations

import datetime
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.password_resets import IssuedPasswordReset, add_password_reset
from app.auth.redis_store import AuthStore
from app.auth.services import ADMIN_ROLES, INVITATION_KIND, clear_mfa, end_sessions, valid_email
from app.auth.tokens import Principal, new_opaque_token, opaque_token_tenant, token_hash
from app.errors import Conflict, NotAllowed, NotFound
from app.gateway.caches import GatewayCatalog, announce_keys
from app.observability.middleware import ClientContext
from app.settings import Settings
from app.tenants.plans import require_room_for_user
from app.tenants.services import record_audit_event
from db.auth import Invitation, User
from db.base import utc_now
from db.provider import ApiToken
from db.session import set_session_tenant
from db.tenant import Organization

INVITATION_TTL = datetime.timedelta(days=7)


async def pending_invitations(session: AsyncSession, now: datetime.datetime) -> list[Invitation]:
    """Invitations not yet accepted and not expired, the soonest to expire first."""
    return list(
        await session.scalars(
            select(Invitation)
            .where(Invitation.accepted_at.is_(None), Invitation.expires_at > now)
            .order_by(Invitation.expires_at)
        )
    )


def join_path(token: str) -> str:
    """The portal page where an invitee accepts the invitation `token` (the token is the credential)."""
    return f"/portal/join/{token}"


async def open_invitation(session: AsyncSession, token: str) -> tuple[Invitation, Organization] | None:
    """The invitation `token` opens and its organization, while it can still be accepted (unused, unexpired,
    the organization active); else None.

    Anyone holding the link may see this much: the organization and the email it was sent to. The session is
    scoped to the token's tenant from here on, as accepting it needs.
    """
    tenant_id = opaque_token_tenant(INVITATION_KIND, token)
    if tenant_id is None:
        return None
    await set_session_tenant(session, tenant_id)
    invitation = await session.scalar(
        select(Invitation).where(
            Invitation.token_hash == token_hash(token),
            Invitation.accepted_at.is_(None),
            Invitation.expires_at > utc_now(),
        )
    )
    organization = await session.get_one(Organization, tenant_id) if invitation is not None else None
    if invitation is None or organization is None or organization.status != "active":
        return None
    return invitation, organization


class AccountService:
    """Each change is audited, committed and, where the gateway caches what it changed, announced here, so the
    API and the portal make it alike. The caller is a tenant admin (the routes' guards see to it)."""

    def __init__(
        self,
        session: AsyncSession,
        auth_store: AuthStore,
        settings: Settings,
        redis: Redis,
        catalog: GatewayCatalog,
        client: ClientContext,
    ) -> None:
        self.session = session
        self.auth_store = auth_store
        self.settings = settings
        self.redis = redis
        self.catalog = catalog
        self.client = client

    async def invite(self, principal: Principal, *, email: str, role: str) -> tuple[Invitation, str]:
        """A pending invitation and its token, which only its hash is kept of: show the token once."""
        if role == "super_admin" and principal.role != "super_admin":
            raise NotAllowed("Only a platform super admin can invite a super admin.", field="role")
        email = valid_email(email, field="email")
        if await self.session.scalar(select(User.id).where(User.email == email)) is not None:
            raise Conflict(f"{email} already has an account in this organization.", field="email")
        # Pending invitations do not hold a seat: accepting one checks the limit again.
        await require_room_for_user(self.session, field="email")
        token = new_opaque_token(INVITATION_KIND, principal.tenant_id)
        invitation = Invitation(
            email=email,
            role=role,
            token_hash=token_hash(token),
            invited_by=principal.user_id,
            expires_at=utc_now() + INVITATION_TTL,
        )
        self.session.add(invitation)
        await self.session.flush()
        inviter = await self.session.get_one(User, principal.user_id)
        record_audit_event(
            self.session,
            actor=inviter.email,
            actor_user_id=inviter.id,
            action="user.invited",
            target_type="user",
            target_id=inviter.id,
            details={"email": email, "role": role, "invitation_id": str(invitation.id)},
            client=self.client,
        )
        await self.session.commit()
        return invitation, token

    async def reissue_invitation(self, principal: Principal, invitation_id: UUID) -> tuple[Invitation, str]:
        """A new token and a fresh expiry for a pending invitation: the old link stops working. Show it once."""
        admin, invitation = await self._invitation_to_manage(principal, invitation_id)
        token = new_opaque_token(INVITATION_KIND, principal.tenant_id)
        invitation.token_hash = token_hash(token)
        invitation.expires_at = utc_now() + INVITATION_TTL
        self._audit_invitation(admin, "user.invitation_reissued", invitation)
        await self.session.commit()
        return invitation, token

    async def revoke_invitation(self, principal: Principal, invitation_id: UUID) -> None:
        """Withdraw a pending invitation: its link stops working (the audit trail keeps who it was for)."""
        admin, invitation = await self._invitation_to_manage(principal, invitation_id)
        self._audit_invitation(admin, "user.invitation_revoked", invitation)
        await self.session.delete(invitation)
        await self.session.commit()

    async def _invitation_to_manage(self, principal: Principal, invitation_id: UUID) -> tuple[User, Invitation]:
        """The acting admin and a not yet accepted invitation, locked; another tenant's is not found (RLS)."""
        invitation = await self.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id).with_for_update()
        )
        if invitation is None:
            raise NotFound("No such invitation in this organization.")
        if invitation.accepted_at is not None:
            raise Conflict(f"{invitation.email} has already accepted this invitation.")
        if invitation.role == "super_admin" and principal.role != "super_admin":
            raise NotAllowed("Only a platform super admin can change a super admin's invitation.")
        return await self.session.get_one(User, principal.user_id), invitation

    def _audit_invitation(self, admin: User, action: str, invitation: Invitation) -> None:
        record_audit_event(
            self.session,
            actor=admin.email,
            actor_user_id=admin.id,
            action=action,
            target_type="invitation",
            target_id=invitation.id,
            details={"email": invitation.email, "role": invitation.role},
            client=self.client,
        )

    async def change_role(self, principal: Principal, user_id: UUID, role: str) -> User:
        """Give a user another role; a demoted admin's sessions end, since access tokens carry the role."""
        if user_id == principal.user_id and role not in ADMIN_ROLES:
            raise NotAllowed("You cannot remove your own administrator role; ask another administrator.", field="role")
        if role == "super_admin" and principal.role != "super_admin":
            raise NotAllowed("Only a platform super admin can make someone a super admin.", field="role")
        admin, user = await self._account_to_manage(principal, user_id)
        previous = user.role
        if previous == role:
            return user
        user.role = role
        ended: list[UUID] = []
        if previous in ADMIN_ROLES and role not in ADMIN_ROLES:
            ended = await self._end_sessions(user, "role_changed")
        self._audit(admin, "user.role_changed", user, old_role=previous, role=role, sessions_ended=len(ended))
        await self.session.commit()
        return user

    async def deactivate(self, principal: Principal, user_id: UUID) -> User:
        """Stop a user signing in, end their sessions now, and have the gateway refuse their API keys."""
        if user_id == principal.user_id:
            raise NotAllowed("You cannot deactivate your own account; ask another administrator.")
        admin, user = await self._account_to_manage(principal, user_id)
        if user.status == "inactive":
            raise Conflict(f"{user.email} is already deactivated.")
        user.status = "inactive"
        ended = await self._end_sessions(user, "user_deactivated")
        self._audit(admin, "user.deactivated", user, sessions_ended=len(ended))
        await self._commit_and_forget_keys(user)
        return user

    async def reactivate(self, principal: Principal, user_id: UUID) -> User:
        """Let a user sign in and use their API keys again; the sessions ended at deactivation stay ended."""
        admin, user = await self._account_to_manage(principal, user_id)
        if user.status == "active":
            raise Conflict(f"{user.email} is already active.")
        await require_room_for_user(self.session)
        user.status = "active"
        self._audit(admin, "user.reactivated", user)
        await self._commit_and_forget_keys(user)
        return user

    async def reset_mfa(self, principal: Principal, user_id: UUID) -> User:
        """For a user who lost their device: MFA off, secret and recovery codes deleted; they enrol again."""
        if user_id == principal.user_id:
            raise NotAllowed("You cannot reset your own two-factor authentication; ask another administrator.")
        admin, user = await self._account_to_manage(principal, user_id)
        if not user.mfa_enabled and user.mfa_secret is None:
            raise Conflict(f"{user.email} has no two-factor authentication to reset.")
        deleted = await clear_mfa(self.session, user)
        self._audit(admin, "mfa.reset", user, recovery_codes_deleted=deleted)
        await self.session.commit()
        return user

    async def issue_password_reset(self, principal: Principal, user_id: UUID) -> IssuedPasswordReset:
        """A one-time link for the user to set a new password (or a first one, after OAuth-only sign-ins)."""
        admin, user = await self._account_to_manage(principal, user_id)
        if user.status != "active":
            raise Conflict(f"{user.email} is deactivated; reactivate the account first.")
        issued = await add_password_reset(
            self.session,
            user,
            public_url=self.settings.public_url,
            actor=admin.email,
            actor_user_id=admin.id,
            client=self.client,
        )
        await self.session.commit()
        return issued

    async def _account_to_manage(self, principal: Principal, user_id: UUID) -> tuple[User, User]:
        """The acting admin and the user they act on, locked; another tenant's user is not found (RLS)."""
        user = await self.session.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is None:
            raise NotFound("No such user in this organization.")
        if user.role == "super_admin" and principal.role != "super_admin":
            raise NotAllowed("Only a platform super admin can change a super admin's account.")
        return await self.session.get_one(User, principal.user_id), user

    async def _end_sessions(self, user: User, reason: str) -> list[UUID]:
        return await end_sessions(self.session, self.auth_store, self.settings, reason, user_id=user.id)

    async def _commit_and_forget_keys(self, user: User) -> None:
        # The gateway caches each key with whether its owner is active: every worker must drop this user's.
        key_hashes = list(await self.session.scalars(select(ApiToken.key_hash).where(ApiToken.user_id == user.id)))
        await self.session.commit()
        await announce_keys(self.redis, self.catalog, key_hashes)

    def _audit(self, admin: User, action: str, user: User, **details: object) -> None:
        record_audit_event(
            self.session,
            actor=admin.email,
            actor_user_id=admin.id,
            action=action,
            target_type="user",
            target_id=user.id,
            details={"email": user.email, **details},
            client=self.client,
        )
