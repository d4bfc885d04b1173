"""Signing in and everything around it: lock-out, sessions and their rotation, TOTP MFA, accepting an
invitation, sign-up, password changes.

All of it runs in the request's session, scoped (after the tenant is known) to that tenant by RLS. Each
method commits what it changed, so the API and the portal keep the same; failures that must leave a trace
(attempt counters, audit events) are committed before the error is raised, any other failure leaves its
changes to the caller's rollback.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import secrets
from typing import Literal
from uuid import UUID

import msgspec
import pyotp
import segno
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.auth.password_resets import PASSWORD_RESET_KIND
from app.auth.passwords import (
    WeakPasswordError,
    hash_password,
    needs_rehash,
    rehash_password,
    spend_verification_time,
    verify_password,
)
from app.auth.redis_store import AuthStore
from app.auth.tokens import (
    SCOPE_FULL,
    SCOPE_MFA_ENROLLMENT,
    InvalidToken,
    Principal,
    csrf_token,
    issue_access_token,
    issue_mfa_ticket,
    new_opaque_token,
    opaque_token_tenant,
    token_hash,
    verify_access_token,
    verify_mfa_ticket,
)
from app.encryption import SecretBox, secret_context
from app.errors import Conflict, InvalidRequest, NotAllowed, NotFound, RateLimited, Unauthenticated
from app.observability.middleware import ClientContext
from app.settings import Settings
from app.tenants.plans import require_room_for_user
from app.tenants.services import (
    ProvisioningError,
    give_new_user_budget,
    lookup_tenant_by_slug,
    normalize_email,
    record_audit_event,
    tenant_policy,
)
from db.auth import Invitation, OAuthConnection, OAuthProvider, PasswordReset, RecoveryCode, User, UserSession
from db.base import utc_now
from db.session import set_session_tenant, tenant_session
from db.tenant import Organization

SessionMode = Literal["api", "portal"]
ADMIN_ROLES = ("tenant_admin", "super_admin")


def is_admin(principal: Principal) -> bool:
    return principal.role in ADMIN_ROLES


REFRESH_TOKEN_KIND = "lrt"
PORTAL_SESSION_KIND = "lss"
INVITATION_KIND = "linv"
MFA_TICKET_TTL_SECONDS = 300
MAX_CODE_FAILURES_PER_TICKET = 5
RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "Lyss"

INVALID_CREDENTIALS = "Invalid organization, email or password."
INVALID_SIGN_IN_STEP = "This sign-in step is invalid or has expired; sign in again."
INVALID_REFRESH_TOKEN = "The refresh token is invalid or has expired; sign in again."
INVALID_RESET_LINK = (
    "This password reset link is unknown, has expired or was already used; ask an administrator for a new one."
)


class IssuedSession(msgspec.Struct, frozen=True):
    """What a successful sign-in hands out: bearer tokens (API) or a cookie value and its CSRF token (portal)."""

    expires_in: int
    scope: str = SCOPE_FULL
    access_token: str | None = None
    refresh_token: str | None = None
    session_token: str | None = None
    csrf_token: str | None = None


class LoginResult(msgspec.Struct, frozen=True):
    status: Literal["authenticated", "mfa_required", "mfa_enrollment_required"]
    user_id: UUID
    session: IssuedSession | None = None
    mfa_ticket: str | None = None


class MfaEnrollment(msgspec.Struct, frozen=True):
    secret: str
    otpauth_uri: str
    qr_svg: str


class ExternalIdentity(msgspec.Struct, frozen=True):
    """Who an OAuth/OIDC provider says the user is."""

    subject: str
    email: str | None
    email_verified: bool
    username: str | None = None
    name: str | None = None


def _hash_recovery_code(code: str) -> str:
    return hashlib.sha256("".join(code.lower().replace("-", "").split()).encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 16 base32 characters: 80 random bits
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _enrollment(secret: str, email: str, tenant_slug: str) -> MfaEnrollment:
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=f"{TOTP_ISSUER} ({tenant_slug})")
    return MfaEnrollment(secret=secret, otpauth_uri=uri, qr_svg=segno.make(uri, error="m").svg_inline(scale=4))


def matching_totp_step(secret: str, code: str, at: datetime.datetime) -> int | None:
    """The time step (of the previous, current or next 30 s) whose code is `code`, if any."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(at)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        store: AuthStore,
        settings: Settings,
        secret_box: SecretBox,
        client: ClientContext,
    ) -> None:
        self.session = session
        self.store = store
        self.settings = settings
        self.keyring = settings.jwt_keyring
        self.secret_box = secret_box
        self.client = client

    # --- helpers --------------------------------------------------------------------------------

    def _audit(self, action: str, *, user: User | None = None, actor: str | None = None, **details: object) -> None:
        record_audit_event(
            self.session,
            actor=actor or (user.email if user else "anonymous"),
            actor_user_id=user.id if user else None,
            action=action,
            target_type="user" if user else None,
            target_id=user.id if user else None,
            details=dict(details),
            client=self.client,
        )

    async def _limit_sign_in_attempts(self) -> None:
        if self.client.address is None:
            return
        wait = await self.store.sign_in_attempt_from(self.client.address, self.settings.login_ip_limit_per_minute)
        if wait is not None:
            raise RateLimited(f"Too many sign-in attempts from this address; try again in {wait} s.", retry_after=wait)

    async def _enter_tenant(self, tenant_slug: str) -> Organization:
        tenant = await lookup_tenant_by_slug(self.session, tenant_slug.strip().lower())
        if tenant is None:
            await spend_verification_time("")  # an unknown organization answers as slowly as a wrong password
            raise Unauthenticated(INVALID_CREDENTIALS)
        await set_session_tenant(self.session, tenant.id)
        organization = await self.session.get_one(Organization, tenant.id)
        if organization.status != "active":
            raise NotAllowed("This organization is not active; contact its administrator.")
        return organization

    async def _user_for_update(self, user_id: UUID) -> User | None:
        return await self.session.scalar(select(User).where(User.id == user_id).with_for_update())

    async def _refuse_if_locked(self, user: User, now: datetime.datetime) -> None:
        if user.locked_until is None:
            return
        if user.locked_until > now:
            wait = int((user.locked_until - now).total_seconds()) + 1
            self._audit("login.refused_locked", user=user)
            await self.session.commit()
            raise RateLimited(f"Too many failed sign-in attempts; try again in {wait} s.", retry_after=wait)
        user.login_attempts = 0
        user.locked_until = None

    async def _count_failure(self, user: User, now: datetime.datetime, reason: str) -> None:
        """Count a failed attempt (locking the account at the limit) and make it stick."""
        user.login_attempts += 1
        self._audit("login.failed", user=user, reason=reason)
        if user.login_attempts >= self.settings.login_max_failures:
            user.locked_until = now + datetime.timedelta(seconds=self.settings.login_lockout_seconds)
            self._audit("login.locked_out", user=user, attempts=user.login_attempts)
        await self.session.commit()

    def _mark_signed_in(self, user: User, now: datetime.datetime, method: str) -> None:
        user.login_attempts = 0
        user.locked_until = None
        user.last_login_at = now
        self._audit("login.succeeded", user=user, method=method)

    async def _open_session(self, user: User, mode: SessionMode, family_id: UUID | None = None) -> IssuedSession:
        now = utc_now()
        family_id = family_id or uuid7()
        principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=family_id)
        if mode == "portal":
            ttl = self.settings.portal_session_ttl_seconds
            session_token = new_opaque_token(PORTAL_SESSION_KIND, user.tenant_id)
            expires_at = now + datetime.timedelta(seconds=ttl)
            self.session.add(
                UserSession(
                    user_id=user.id,
                    family_id=family_id,
                    kind="portal",
                    session_token_hash=token_hash(session_token),
                    expires_at=expires_at,
                    refresh_expires_at=expires_at,
                    ip_address=self.client.ip_address,
                    user_agent=self.client.user_agent,
                )
            )
            await self.session.commit()
            return IssuedSession(
                expires_in=ttl, session_token=session_token, csrf_token=csrf_token(self.keyring, session_token)
            )
        access_ttl = self.settings.access_token_ttl_seconds
        refresh_token = new_opaque_token(REFRESH_TOKEN_KIND, user.tenant_id)
        self.session.add(
            UserSession(
                user_id=user.id,
                family_id=family_id,
                kind="api",
                refresh_token_hash=token_hash(refresh_token),
                expires_at=now + datetime.timedelta(seconds=access_ttl),
                refresh_expires_at=now + datetime.timedelta(seconds=self.settings.refresh_token_ttl_seconds),
                ip_address=self.client.ip_address,
                user_agent=self.client.user_agent,
            )
        )
        await self.session.commit()
        return IssuedSession(
            expires_in=access_ttl,
            access_token=issue_access_token(self.keyring, principal, access_ttl),
            refresh_token=refresh_token,
        )

    async def _end_sessions(self, reason: str, *, user_id: UUID, family_id: UUID | None = None) -> list[UUID]:
        return await end_sessions(self.session, self.store, self.settings, reason, user_id=user_id, family_id=family_id)

    async def _after_primary_authentication(
        self, user: User, organization: Organization, mode: SessionMode, method: str
    ) -> LoginResult:
        now = utc_now()
        if user.mfa_enabled:
            await self.session.commit()
            ticket = issue_mfa_ticket(
                self.keyring, user_id=user.id, tenant_id=user.tenant_id, mode=mode, ttl_seconds=MFA_TICKET_TTL_SECONDS
            )
            return LoginResult(status="mfa_required", user_id=user.id, mfa_ticket=ticket)
        self._mark_signed_in(user, now, method)
        if user.role in ADMIN_ROLES and tenant_policy(organization).require_mfa_for_admins:
            await self.session.commit()
            ttl = self.settings.access_token_ttl_seconds
            principal = Principal(
                user_id=user.id,
                tenant_id=user.tenant_id,
                role=user.role,
                session_id=uuid7(),
                scope=SCOPE_MFA_ENROLLMENT,
            )
            session = IssuedSession(
                expires_in=ttl,
                scope=SCOPE_MFA_ENROLLMENT,
                access_token=issue_access_token(self.keyring, principal, ttl),
            )
            return LoginResult(status="mfa_enrollment_required", user_id=user.id, session=session)
        return LoginResult(status="authenticated", user_id=user.id, session=await self._open_session(user, mode))

    # --- password sign-in -------------------------------------------------------------------------

    async def login(self, *, tenant_slug: str, email: str, password: str, mode: SessionMode) -> LoginResult:
        await self._limit_sign_in_attempts()
        organization = await self._enter_tenant(tenant_slug)
        email = email.strip().lower()
        now = utc_now()
        user = await self.session.scalar(select(User).where(User.email == email).with_for_update())
        if user is None:
            wait = await self.store.unknown_account_lock(organization.id, email, self.settings.login_max_failures)
            if wait is not None:
                raise RateLimited(f"Too many failed sign-in attempts; try again in {wait} s.", retry_after=wait)
            await spend_verification_time(password)
            await self.store.unknown_account_failed(organization.id, email, self.settings.login_lockout_seconds)
            self._audit("login.failed", actor=email[:255], reason="unknown_email")
            await self.session.commit()
            raise Unauthenticated(INVALID_CREDENTIALS)
        await self._refuse_if_locked(user, now)
        if user.hashed_password is None or not await verify_password(user.hashed_password, password):
            if user.hashed_password is None:
                await spend_verification_time(password)
            await self._count_failure(user, now, "wrong_password")
            raise Unauthenticated(INVALID_CREDENTIALS)
        if user.status != "active":
            await self._count_failure(user, now, f"user_{user.status}")
            raise Unauthenticated(INVALID_CREDENTIALS)
        if needs_rehash(user.hashed_password):
            user.hashed_password = await rehash_password(password)
        return await self._after_primary_authentication(user, organization, mode, "password")

    async def complete_mfa(self, *, ticket: str, code: str | None, recovery_code: str | None) -> LoginResult:
        await self._limit_sign_in_attempts()
        if (code is None) == (recovery_code is None):
            raise InvalidRequest("Send either `code` (from the authenticator app) or `recovery_code`, not both.")
        try:
            claims = verify_mfa_ticket(self.keyring, ticket)
        except InvalidToken:
            raise Unauthenticated(INVALID_SIGN_IN_STEP) from None
        ticket_ttl = max(claims.expires_at - int(utc_now().timestamp()), 1)
        await set_session_tenant(self.session, claims.tenant_id)
        user = await self._user_for_update(claims.user_id)
        if user is None or user.status != "active" or not user.mfa_enabled or user.mfa_secret is None:
            raise Unauthenticated(INVALID_SIGN_IN_STEP)
        now = utc_now()
        await self._refuse_if_locked(user, now)
        accepted = (
            self._accept_totp(user, code, now)
            if code is not None
            else await self._use_recovery_code(user, recovery_code or "")
        )
        if not accepted:
            failures = await self.store.mfa_ticket_failed(claims.ticket_id, ticket_ttl)
            await self._count_failure(user, now, "wrong_mfa_code")
            if failures >= MAX_CODE_FAILURES_PER_TICKET:
                await self.store.claim_mfa_ticket(claims.ticket_id, ticket_ttl)
                raise Unauthenticated("Too many wrong codes; sign in again.")
            raise Unauthenticated("The code is wrong or was already used.")
        if not await self.store.claim_mfa_ticket(claims.ticket_id, ticket_ttl):
            raise Unauthenticated(INVALID_SIGN_IN_STEP)
        if recovery_code is not None:
            remaining = await self._remaining_recovery_codes(user.id)
            self._audit("mfa.recovery_code_used", user=user, remaining=remaining)
        organization = await self.session.get_one(Organization, user.tenant_id)
        if organization.status != "active":
            raise NotAllowed("This organization is not active; contact its administrator.")
        self._mark_signed_in(user, now, "password+totp" if code is not None else "password+recovery_code")
        mode: SessionMode = "portal" if claims.mode == "portal" else "api"
        return LoginResult(status="authenticated", user_id=user.id, session=await self._open_session(user, mode))

    def _accept_totp(self, user: User, code: str, now: datetime.datetime) -> bool:
        """Check a TOTP code and burn its time step; the caller holds the user row locked."""
        if user.mfa_secret is None:
            return False
        secret = self.secret_box.decrypt(user.mfa_secret, context=_mfa_secret_context(user))
        step = matching_totp_step(secret, code, now)
        if step is None or (user.mfa_last_used_step is not None and step <= user.mfa_last_used_step):
            return False
        user.mfa_last_used_step = step
        return True

    async def _use_recovery_code(self, user: User, code: str) -> bool:
        used = await self.session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == _hash_recovery_code(code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=utc_now())
            .returning(RecoveryCode.id)
        )
        return used.first() is not None

    async def _remaining_recovery_codes(self, user_id: UUID) -> int:
        rows = await self.session.scalars(
            select(RecoveryCode.id).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        return len(rows.all())

    # --- sessions ---------------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> IssuedSession:
        tenant_id = opaque_token_tenant(REFRESH_TOKEN_KIND, refresh_token)
        if tenant_id is None:
            raise Unauthenticated(INVALID_REFRESH_TOKEN)
        await set_session_tenant(self.session, tenant_id)
        row = await self.session.scalar(
            select(UserSession)
            .where(UserSession.refresh_token_hash == token_hash(refresh_token), UserSession.kind == "api")
            .with_for_update()
        )
        if row is None:
            raise Unauthenticated(INVALID_REFRESH_TOKEN)
        user = await self._user_for_update(row.user_id)
        if user is None:
            raise Unauthenticated(INVALID_REFRESH_TOKEN)
        now = utc_now()
        if row.ended_reason == "rotated":
            # A refresh token is good for one use. Seeing it again means it was copied: end the whole
            # login, for the thief and the owner alike; the owner signs in again.
            await self._end_sessions("refresh_reuse", user_id=row.user_id, family_id=row.family_id)
            self._audit("session.refresh_reuse_detected", user=user, family_id=str(row.family_id))
            await self.session.commit()
            raise Unauthenticated("This refresh token was already used; the sign-in has been ended. Sign in again.")
        if row.ended_at is not None or row.refresh_expires_at <= now or user.status != "active":
            raise Unauthenticated(INVALID_REFRESH_TOKEN)
        organization = await self.session.get_one(Organization, user.tenant_id)
        if organization.status != "active":
            raise NotAllowed("This organization is not active; contact its administrator.")
        if user.role in ADMIN_ROLES and not user.mfa_enabled and tenant_policy(organization).require_mfa_for_admins:
            raise NotAllowed("Your organization requires two-factor authentication for admins; sign in again.")
        row.ended_at = now
        row.ended_reason = "rotated"
        row.last_used_at = now
        return await self._open_session(user, "api", family_id=row.family_id)

    async def logout(self, principal: Principal) -> None:
        await self._end_sessions("logout", user_id=principal.user_id, family_id=principal.session_id)
        user = await self.session.get(User, principal.user_id)
        self._audit("session.revoked", user=user, scope="this_session")
        await self.session.commit()

    async def logout_everywhere(self, principal: Principal) -> int:
        families = await self._end_sessions("logout_all", user_id=principal.user_id)
        await self.store.revoke_session(principal.session_id, self.settings.access_token_ttl_seconds + 60)
        user = await self.session.get(User, principal.user_id)
        self._audit("session.revoked", user=user, scope="all_sessions", sessions=len(families))
        await self.session.commit()
        return len(families)

    async def change_password(self, principal: Principal, *, current_password: str, new_password: str) -> None:
        user = await self._user_for_update(principal.user_id)
        if user is None:
            raise Unauthenticated("Sign in again.")
        now = utc_now()
        await self._refuse_if_locked(user, now)
        if user.hashed_password is None or not await verify_password(user.hashed_password, current_password):
            await self._count_failure(user, now, "wrong_current_password")
            raise NotAllowed("The current password is wrong.", field="current_password")
        try:
            user.hashed_password = await hash_password(new_password, email=user.email)
        except WeakPasswordError as error:
            raise InvalidRequest(f"The new password is not acceptable: {error}.", field="new_password") from None
        user.password_changed_at = now
        statement = update(UserSession).where(
            UserSession.user_id == user.id,
            UserSession.ended_at.is_(None),
            UserSession.family_id != principal.session_id,
        )
        ended = await self.session.execute(
            statement.values(ended_at=now, ended_reason="password_changed").returning(UserSession.family_id)
        )
        for family in set(ended.scalars()):
            await self.store.revoke_session(family, self.settings.access_token_ttl_seconds + 60)
        self._audit("user.password_changed", user=user)
        await self.session.commit()

    # --- TOTP MFA ---------------------------------------------------------------------------------

    async def enrolment_principal(self, access_token: str) -> Principal | None:
        """Who holds this enrolment-only access token, if it is valid and its sign-in not ended; None otherwise.

        The page that presents it is public, so the session learns its tenant here, before the enrolment calls.
        """
        try:
            principal = verify_access_token(self.keyring, access_token)
        except InvalidToken:
            return None
        if principal.scope != SCOPE_MFA_ENROLLMENT or await self.store.session_revoked(principal.session_id):
            return None
        await set_session_tenant(self.session, principal.tenant_id)
        return principal

    async def start_mfa_enrollment(self, principal: Principal) -> MfaEnrollment:
        user = await self._user_for_update(principal.user_id)
        if user is None:
            raise Unauthenticated("Sign in again.")
        if user.mfa_enabled:
            raise Conflict("Two-factor authentication is already on; turn it off first to enrol a new device.")
        organization = await self.session.get_one(Organization, user.tenant_id)
        secret = pyotp.random_base32()
        user.mfa_secret = self.secret_box.encrypt(secret, context=_mfa_secret_context(user))
        user.mfa_last_used_step = None
        self._audit("mfa.enrollment_started", user=user)
        await self.session.commit()
        return _enrollment(secret, user.email, organization.slug)

    async def confirm_mfa(self, principal: Principal, code: str) -> list[str]:
        user = await self._user_for_update(principal.user_id)
        if user is None:
            raise Unauthenticated("Sign in again.")
        if user.mfa_enabled:
            raise Conflict("Two-factor authentication is already on.")
        if user.mfa_secret is None:
            raise Conflict("Start the enrolment first: POST /api/auth/mfa/enroll.")
        if not self._accept_totp(user, code, utc_now()):
            raise InvalidRequest(
                "The code does not match; check the device's clock and enter the current code.", field="code"
            )
        user.mfa_enabled = True
        codes = await self._replace_recovery_codes(user)
        self._audit("mfa.enabled", user=user)
        await self.session.commit()
        return codes

    async def _replace_recovery_codes(self, user: User) -> list[str]:
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        self.session.add_all(RecoveryCode(user_id=user.id, code_hash=_hash_recovery_code(code)) for code in codes)
        return codes

    async def disable_mfa(self, principal: Principal, *, password: str, code: str) -> None:
        user = await self._user_for_update(principal.user_id)
        if user is None:
            raise Unauthenticated("Sign in again.")
        if not user.mfa_enabled:
            raise Conflict("Two-factor authentication is already off.")
        organization = await self.session.get_one(Organization, user.tenant_id)
        if user.role in ADMIN_ROLES and tenant_policy(organization).require_mfa_for_admins:
            raise NotAllowed("Your organization requires two-factor authentication for admins.")
        now = utc_now()
        await self._refuse_if_locked(user, now)
        password_ok = user.hashed_password is not None and await verify_password(user.hashed_password, password)
        if not (password_ok and self._accept_totp(user, code, now)):
            await self._count_failure(user, now, "wrong_mfa_disable_credentials")
            raise NotAllowed("The password or the code is wrong.")
        await clear_mfa(self.session, user)
        self._audit("mfa.disabled", user=user)
        await self.session.commit()

    async def pending_mfa_enrollment(self, principal: Principal) -> MfaEnrollment | None:
        """The enrolment started and not yet confirmed, to show its QR code and key again after a wrong code."""
        user = await self.session.get(User, principal.user_id)
        if user is None or user.mfa_enabled or user.mfa_secret is None:
            return None
        secret = self.secret_box.decrypt(user.mfa_secret, context=_mfa_secret_context(user))
        organization = await self.session.get_one(Organization, user.tenant_id)
        return _enrollment(secret, user.email, organization.slug)

    async def regenerate_recovery_codes(self, principal: Principal, *, code: str) -> list[str]:
        """New recovery codes for a current authenticator code; the old ones stop working."""
        user = await self._user_for_update(principal.user_id)
        if user is None:
            raise Unauthenticated("Sign in again.")
        if not user.mfa_enabled:
            raise Conflict("Two-factor authentication is off; turn it on to get recovery codes.")
        now = utc_now()
        await self._refuse_if_locked(user, now)
        if not self._accept_totp(user, code, now):
            await self._count_failure(user, now, "wrong_mfa_code")
            raise NotAllowed("The code is wrong or was already used.", field="code")
        codes = await self._replace_recovery_codes(user)
        self._audit("mfa.recovery_codes_regenerated", user=user)
        await self.session.commit()
        return codes

    # --- password reset links ---------------------------------------------------------------------

    async def _password_reset(self, token: str) -> PasswordReset:
        """The live reset row of `token`, locked; the session learns the tenant from the token."""
        tenant_id = opaque_token_tenant(PASSWORD_RESET_KIND, token)
        if tenant_id is None:
            raise NotFound(INVALID_RESET_LINK)
        await set_session_tenant(self.session, tenant_id)
        reset = await self.session.scalar(
            select(PasswordReset)
            .where(PasswordReset.token_hash == token_hash(token), PasswordReset.used_at.is_(None))
            .with_for_update()
        )
        if reset is None or reset.expires_at <= utc_now():
            raise NotFound(INVALID_RESET_LINK)
        return reset

    async def password_reset_email(self, token: str) -> str:
        """The email of the account a live reset link is for (the page names it); NotFound otherwise."""
        reset = await self._password_reset(token)
        user = await self.session.get_one(User, reset.user_id)
        if user.status != "active":
            raise NotFound(INVALID_RESET_LINK)
        return user.email

    async def reset_password(self, *, token: str, new_password: str) -> User:
        """Set the password a reset link is for, once; every session of the user ends."""
        await self._limit_sign_in_attempts()
        reset = await self._password_reset(token)
        user = await self._user_for_update(reset.user_id)
        if user is None or user.status != "active":
            raise NotFound(INVALID_RESET_LINK)
        try:
            user.hashed_password = await hash_password(new_password, email=user.email)
        except WeakPasswordError as error:
            raise InvalidRequest(f"The new password is not acceptable: {error}.", field="new_password") from None
        now = utc_now()
        reset.used_at = now
        user.password_changed_at = now
        # The link proves who they are: a lock-out from guessing no longer stands in their way.
        user.login_attempts = 0
        user.locked_until = None
        families = await self._end_sessions("password_reset", user_id=user.id)
        self._audit("user.password_reset_used", user=user, reset_id=str(reset.id), sessions_ended=len(families))
        await self.session.commit()
        return user

    # --- getting an account -------------------------------------------------------------------------

    async def accept_invitation(self, *, token: str, password: str, full_name: str | None) -> User:
        await self._limit_sign_in_attempts()
        tenant_id = opaque_token_tenant(INVITATION_KIND, token)
        if tenant_id is None:
            raise NotFound("This invitation is invalid or has expired; ask for a new one.")
        await set_session_tenant(self.session, tenant_id)
        invitation = await self.session.scalar(
            select(Invitation)
            .where(Invitation.token_hash == token_hash(token), Invitation.accepted_at.is_(None))
            .with_for_update()
        )
        if invitation is None or invitation.expires_at <= utc_now():
            raise NotFound("This invitation is invalid or has expired; ask for a new one.")
        user = await self._create_user(email=invitation.email, password=password, role=invitation.role, name=full_name)
        invitation.accepted_at = utc_now()
        self._audit("user.invitation_accepted", user=user, invitation_id=str(invitation.id))
        await self.session.commit()
        return user

    async def sign_up(self, *, tenant_slug: str, email: str, password: str, full_name: str | None) -> User:
        await self._limit_sign_in_attempts()
        tenant = await lookup_tenant_by_slug(self.session, tenant_slug.strip().lower())
        if tenant is None:
            raise NotFound(f"No organization is called '{tenant_slug}'.", field="tenant")
        await set_session_tenant(self.session, tenant.id)
        organization = await self.session.get_one(Organization, tenant.id)
        if organization.status != "active" or not tenant_policy(organization).allow_self_signup:
            raise NotAllowed(
                "This organization does not allow sign-up; ask an administrator for an invitation.", field="tenant"
            )
        user = await self._create_user(
            email=valid_email(email, field="email"), password=password, role="end_user", name=full_name
        )
        self._audit("user.signed_up", user=user, method="password")
        await self.session.commit()
        return user

    async def sign_in_new_account(self, user: User, *, how: str) -> LoginResult:
        """Sign in, in the portal, someone who just got their account (`how`: invitation, sign_up) by password:
        they proved nothing new since, so no lock-out check; the organization's MFA rule for admins holds."""
        organization = await self.session.get_one(Organization, user.tenant_id)
        if organization.status != "active":
            raise NotAllowed("This organization is not active; contact its administrator.")
        return await self._after_primary_authentication(user, organization, "portal", how)

    async def _create_user(self, *, email: str, password: str | None, role: str, name: str | None) -> User:
        if await self.session.scalar(select(User.id).where(User.email == email)) is not None:
            raise Conflict(f"{email} already has an account in this organization; sign in instead.")
        await require_room_for_user(self.session)
        hashed = None
        if password is not None:
            try:
                hashed = await hash_password(password, email=email)
            except WeakPasswordError as error:
                raise InvalidRequest(f"The password is not acceptable: {error}.", field="password") from None
        user = User(email=email, hashed_password=hashed, role=role, full_name=name)
        self.session.add(user)
        await self.session.flush()
        await give_new_user_budget(self.session, user.id)
        return user

    # --- OAuth / OIDC -----------------------------------------------------------------------------

    async def complete_external_login(
        self,
        provider: OAuthProvider,
        identity: ExternalIdentity,
        *,
        mode: SessionMode,
        link_user_id: UUID | None,
        invitation_id: UUID | None = None,
    ) -> LoginResult:
        """Sign in (or link) the user an external identity belongs to, or create the invited one (`invitation_id`:
        the invitation the sign-in started from); the tenant is already set."""
        organization = await self.session.get_one(Organization, provider.tenant_id)
        if organization.status != "active":
            raise NotAllowed("This organization is not active; contact its administrator.")
        connection = await self.session.scalar(
            select(OAuthConnection).where(
                OAuthConnection.provider_id == provider.id, OAuthConnection.external_id == identity.subject
            )
        )
        email = identity.email.strip().lower() if identity.email else None
        if connection is not None:
            if link_user_id is not None and connection.user_id != link_user_id:
                raise Conflict("This external account is already linked to another user.")
            user = await self._user_for_update(connection.user_id)
        elif link_user_id is not None:
            already_linked = await self.session.scalar(
                select(OAuthConnection.id).where(
                    OAuthConnection.provider_id == provider.id, OAuthConnection.user_id == link_user_id
                )
            )
            if already_linked is not None:
                raise Conflict(f"Your account is already linked to {provider.provider_name}; unlink it first.")
            user = await self._user_for_update(link_user_id)
            connection = self._link(provider, identity, link_user_id, how="explicit")
        elif invitation_id is not None:
            user = await self._accept_invitation_as(provider, identity, invitation_id)
            connection = self._link(provider, identity, user.id, how="invitation")
        elif (
            email
            and identity.email_verified
            and (existing := await self.session.scalar(select(User).where(User.email == email).with_for_update()))
        ):
            user = existing
            connection = self._link(provider, identity, existing.id, how="verified_email")
        elif email and identity.email_verified and tenant_policy(organization).allow_self_signup:
            user = await self._create_user(email=email, password=None, role="end_user", name=identity.name)
            user.email_verified = True
            self._audit("user.signed_up", user=user, method=f"oauth:{provider.provider_name}")
            connection = self._link(provider, identity, user.id, how="sign_up")
        else:
            raise NotAllowed(
                "No account here matches this sign-in (the provider gave no verified email we know); "
                "ask an administrator for an invitation, then link the provider from your account."
            )
        if user is None or user.status != "active":
            raise Unauthenticated("This account cannot sign in; contact your administrator.")
        connection.last_used_at = utc_now()
        connection.external_email = email
        connection.external_username = identity.username
        if link_user_id is not None:
            await self.session.commit()
            return LoginResult(status="authenticated", user_id=user.id)
        # No lock-out check: it guards against password guessing, and the provider vouched for this user.
        return await self._after_primary_authentication(user, organization, mode, f"oauth:{provider.provider_name}")

    async def _accept_invitation_as(
        self, provider: OAuthProvider, identity: ExternalIdentity, invitation_id: UUID
    ) -> User:
        """The invited account, created for the provider's identity: only for the address the invitation was sent
        to, which the provider must vouch for."""
        invitation = await self.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id, Invitation.accepted_at.is_(None)).with_for_update()
        )
        if invitation is None or invitation.expires_at <= utc_now():
            raise NotFound("This invitation is invalid or has expired; ask for a new one.")
        email = identity.email.strip().lower() if identity.email else None
        if not identity.email_verified or email != invitation.email:
            provider_label = provider.display_name or provider.provider_name
            raise NotAllowed(
                f"This invitation is for {invitation.email}: sign in with the {provider_label} account of that "
                "address, or set a password on the invitation page instead."
            )
        user = await self._create_user(email=email, password=None, role=invitation.role, name=identity.name)
        user.email_verified = True
        invitation.accepted_at = utc_now()
        self._audit(
            "user.invitation_accepted",
            user=user,
            invitation_id=str(invitation.id),
            method=f"oauth:{provider.provider_name}",
        )
        return user

    def _link(self, provider: OAuthProvider, identity: ExternalIdentity, user_id: UUID, how: str) -> OAuthConnection:
        connection = OAuthConnection(user_id=user_id, provider_id=provider.id, external_id=identity.subject)
        self.session.add(connection)
        record_audit_event(
            self.session,
            actor=identity.email or identity.subject,
            actor_user_id=user_id,
            action="oauth.linked",
            target_type="user",
            target_id=user_id,
            details={"provider": provider.provider_name, "how": how},
            client=self.client,
        )
        return connection


async def self_signup_organization(session: AsyncSession, tenant_slug: str) -> Organization | None:
    """The active organization called `tenant_slug` if it lets people sign up; the session is then scoped to it."""
    tenant = await lookup_tenant_by_slug(session, tenant_slug.strip().lower())
    if tenant is None or tenant.status != "active":
        return None
    await set_session_tenant(session, tenant.id)
    organization = await session.get_one(Organization, tenant.id)
    return organization if tenant_policy(organization).allow_self_signup else None


def valid_email(email: str, *, field: str | None = None) -> str:
    try:
        return normalize_email(email)
    except ProvisioningError as error:
        raise InvalidRequest(str(error), field=field) from None


async def end_sessions(
    session: AsyncSession,
    store: AuthStore,
    settings: Settings,
    reason: str,
    *,
    user_id: UUID,
    family_id: UUID | None = None,
) -> list[UUID]:
    """End the live rows of one family (or of all the user's families); their access tokens die too."""
    statement = update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    if family_id is not None:
        statement = statement.where(UserSession.family_id == family_id)
    ended = await session.execute(
        statement.values(ended_at=utc_now(), ended_reason=reason).returning(UserSession.family_id)
    )
    families = set(ended.scalars())
    if family_id is not None:
        families.add(family_id)
    for family in families:
        await store.revoke_session(family, settings.access_token_ttl_seconds + 60)
    return sorted(families)


async def clear_mfa(session: AsyncSession, user: User) -> int:
    """MFA off, its secret and recovery codes gone; returns how many recovery codes were deleted."""
    user.mfa_enabled = False
    user.mfa_secret = None
    user.mfa_last_used_step = None
    deleted = await session.execute(
        delete(RecoveryCode).where(RecoveryCode.user_id == user.id).returning(RecoveryCode.id)
    )
    return len(deleted.all())


def _mfa_secret_context(user: User) -> str:
    return secret_context("auth_users", "mfa_secret", user.tenant_id)


async def authenticate_portal_session(
    session_maker: async_sessionmaker[AsyncSession], session_token: str
) -> Principal | None:
    """The principal of a live portal session cookie, or None. Revocation is immediate: the row decides."""
    tenant_id = opaque_token_tenant(PORTAL_SESSION_KIND, session_token)
    if tenant_id is None:
        return None
    async with tenant_session(session_maker, tenant_id) as session:
        now = utc_now()
        row = (
            await session.execute(
                select(UserSession.family_id, UserSession.id, UserSession.last_used_at, User.id, User.role)
                .join(User, User.id == UserSession.user_id)
                .where(
                    UserSession.session_token_hash == token_hash(session_token),
                    UserSession.kind == "portal",
                    UserSession.ended_at.is_(None),
                    UserSession.expires_at > now,
                    User.status == "active",
                )
            )
        ).one_or_none()
        if row is None:
            return None
        family_id, row_id, last_used_at, user_id, role = row
        if last_used_at is None or now - last_used_at > datetime.timedelta(minutes=1):
            await session.execute(update(UserSession).where(UserSession.id == row_id).values(last_used_at=now))
            await session.commit()
    return Principal(user_id=user_id, tenant_id=tenant_id, role=role, session_id=family_id)


def new_oauth_secrets() -> tuple[str, str, str]:
    """state, nonce and PKCE code verifier for one authorization request."""
    return secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
