"""HTTP endpoints of the auth domain: sign-in, sessions, MFA, invitations, sign-up, OAuth/OIDC, and /api/me."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guards import ALLOWS_MFA_ENROLLMENT_SCOPE, requires_tenant_admin
from app.auth.middleware import SESSION_COOKIE
from app.auth.oauth import CALLBACK_PATH, OAuthClient, OAuthFailed
from app.auth.oauth_providers import (
    OAuthProviderService,
    list_oauth_providers,
    oauth_client_secret_context,
)
from app.auth.redis_store import AuthStore
from app.auth.schemas import (
    AcceptInvitationRequest,
    InvitationRequest,
    InvitationResponse,
    LoginRequest,
    LoginResponse,
    LogoutEverywhereResponse,
    MfaConfirmRequest,
    MfaDisableRequest,
    MfaEnrollmentResponse,
    MfaLoginRequest,
    OAuthConnectionRead,
    OAuthLinkRequest,
    OAuthLinkResponse,
    OAuthProviderCreate,
    OAuthProviderPublic,
    OAuthProviderRead,
    OAuthProviderUpdate,
    PasswordChangeRequest,
    RecoveryCodesResponse,
    RefreshRequest,
    SignUpRequest,
    TokenResponse,
)
from app.auth.services import AuthService, LoginResult, SessionMode, new_oauth_secrets
from app.auth.tokens import Principal
from app.encryption import SecretBox
from app.errors import InvalidRequest, NotFound, ServiceError
from app.schemas import read_as
from app.settings import Settings
from app.tenants.accounts import AccountService, open_invitation
from app.tenants.budgets import BudgetRead, budgets_of_member
from app.tenants.schemas import UserRead
from app.tenants.services import Actor, lookup_tenant_by_slug, organization_user
from db.auth import OAuthConnection, OAuthProvider
from db.session import set_session_tenant

OAUTH_STATE_TTL_SECONDS = 600


AuthRequest = Request[Principal, Any, State]
PUBLIC = {"exclude_from_auth": True}


def _login_response(result: LoginResult, settings: Settings) -> Response[LoginResponse]:
    session = result.session
    if session is None:
        return Response(LoginResponse(status=result.status, mfa_ticket=result.mfa_ticket), status_code=HTTP_200_OK)
    if session.session_token is not None:
        cookie = Cookie(
            key=SESSION_COOKIE,
            value=session.session_token,
            max_age=session.expires_in,
            path="/",
            httponly=True,
            secure=settings.cookies_secure,
            samesite="lax",
        )
        body = LoginResponse(status=result.status, expires_in=session.expires_in, csrf_token=session.csrf_token)
        return Response(body, cookies=[cookie], status_code=HTTP_200_OK)
    body = LoginResponse(
        status=result.status,
        token_type="Bearer",
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        expires_in=session.expires_in,
        scope=session.scope,
    )
    return Response(body, status_code=HTTP_200_OK)


def _forget_cookie(settings: Settings) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE, value="", max_age=0, path="/", httponly=True, secure=settings.cookies_secure, samesite="lax"
    )


# Where a browser's refused OAuth sign-in lands: the portal's sign-in page shows why.
PORTAL_SIGN_IN = "/portal/login"


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @post("/login", opt=PUBLIC, status_code=HTTP_200_OK, summary="Sign in with organization, email and password")
    async def login(
        self,
        settings: NamedDependency[Settings],
        data: JSONBody[LoginRequest],
        auth: NamedDependency[AuthService],
        request: Request[Any, Any, State],
    ) -> Response[LoginResponse]:
        result = await auth.login(tenant_slug=data.tenant, email=data.email, password=data.password, mode=data.session)
        return _login_response(result, settings)

    @post("/login/mfa", opt=PUBLIC, status_code=HTTP_200_OK, summary="Second step: a TOTP or recovery code")
    async def login_mfa(
        self,
        settings: NamedDependency[Settings],
        data: JSONBody[MfaLoginRequest],
        auth: NamedDependency[AuthService],
        request: Request[Any, Any, State],
    ) -> Response[LoginResponse]:
        result = await auth.complete_mfa(ticket=data.mfa_ticket, code=data.code, recovery_code=data.recovery_code)
        return _login_response(result, settings)

    @post("/refresh", opt=PUBLIC, status_code=HTTP_200_OK, summary="Trade a refresh token for new tokens (rotation)")
    async def refresh(self, data: JSONBody[RefreshRequest], auth: NamedDependency[AuthService]) -> TokenResponse:
        issued = await auth.refresh(data.refresh_token)
        assert issued.access_token is not None
        assert issued.refresh_token is not None
        return TokenResponse(
            token_type="Bearer",
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            expires_in=issued.expires_in,
        )

    @post(
        "/logout", status_code=HTTP_204_NO_CONTENT, opt={ALLOWS_MFA_ENROLLMENT_SCOPE: True}, summary="End this session"
    )
    async def logout(
        self, settings: NamedDependency[Settings], request: AuthRequest, auth: NamedDependency[AuthService]
    ) -> Response[None]:
        await auth.logout(request.user)
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[_forget_cookie(settings)])

    @post("/logout-all", status_code=HTTP_200_OK, summary="End every session of this user")
    async def logout_everywhere(
        self, settings: NamedDependency[Settings], request: AuthRequest, auth: NamedDependency[AuthService]
    ) -> Response[LogoutEverywhereResponse]:
        ended = await auth.logout_everywhere(request.user)
        return Response(LogoutEverywhereResponse(sessions_ended=ended), cookies=[_forget_cookie(settings)])

    @post("/password", status_code=HTTP_204_NO_CONTENT, summary="Change the password; ends the other sessions")
    async def change_password(
        self, data: JSONBody[PasswordChangeRequest], request: AuthRequest, auth: NamedDependency[AuthService]
    ) -> None:
        await auth.change_password(request.user, current_password=data.current_password, new_password=data.new_password)

    @post(
        "/mfa/enroll", opt={ALLOWS_MFA_ENROLLMENT_SCOPE: True}, status_code=HTTP_200_OK, summary="Start TOTP enrolment"
    )
    async def enroll_mfa(self, request: AuthRequest, auth: NamedDependency[AuthService]) -> MfaEnrollmentResponse:
        enrollment = await auth.start_mfa_enrollment(request.user)
        return MfaEnrollmentResponse(
            secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri, qr_svg=enrollment.qr_svg
        )

    @post("/mfa/confirm", opt={ALLOWS_MFA_ENROLLMENT_SCOPE: True}, status_code=HTTP_200_OK, summary="Turn TOTP on")
    async def confirm_mfa(
        self, data: JSONBody[MfaConfirmRequest], request: AuthRequest, auth: NamedDependency[AuthService]
    ) -> RecoveryCodesResponse:
        return RecoveryCodesResponse(recovery_codes=await auth.confirm_mfa(request.user, data.code))

    @post("/mfa/disable", status_code=HTTP_204_NO_CONTENT, summary="Turn TOTP off (password and a current code)")
    async def disable_mfa(
        self, data: JSONBody[MfaDisableRequest], request: AuthRequest, auth: NamedDependency[AuthService]
    ) -> None:
        await auth.disable_mfa(request.user, password=data.password, code=data.code)

    @post("/invitations", guards=[requires_tenant_admin], status_code=HTTP_201_CREATED, summary="Invite a user")
    async def invite(
        self, data: JSONBody[InvitationRequest], request: AuthRequest, accounts: NamedDependency[AccountService]
    ) -> InvitationResponse:
        invitation, token = await accounts.invite(request.user, email=data.email, role=data.role)
        return InvitationResponse(
            id=invitation.id,
            email=invitation.email,
            role=invitation.role,
            expires_at=invitation.expires_at,
            token=token,
        )

    @post("/invitations/accept", opt=PUBLIC, status_code=HTTP_201_CREATED, summary="Accept an invitation")
    async def accept_invitation(
        self,
        data: JSONBody[AcceptInvitationRequest],
        auth: NamedDependency[AuthService],
    ) -> UserRead:
        user = await auth.accept_invitation(token=data.token, password=data.password, full_name=data.full_name)
        return read_as(UserRead, user)

    @post("/signup", opt=PUBLIC, status_code=HTTP_201_CREATED, summary="Sign up, where the organization allows it")
    async def sign_up(self, data: JSONBody[SignUpRequest], auth: NamedDependency[AuthService]) -> UserRead:
        user = await auth.sign_up(
            tenant_slug=data.tenant, email=data.email, password=data.password, full_name=data.full_name
        )
        return read_as(UserRead, user)


def _provider_read(provider: OAuthProvider) -> OAuthProviderRead:
    return read_as(OAuthProviderRead, provider, name=provider.provider_name)


def _safe_return_path(return_to: str | None) -> str:
    # Only paths on this site: anything else would make the sign-in an open redirect.
    if return_to and return_to.startswith("/") and not return_to.startswith(("//", "/\\")):
        return return_to
    return "/"


class OAuthController(Controller):
    """Providers (admins), the authorization-code flow (public), and links between users and providers."""

    path = "/api/auth"
    tags = ["auth: OAuth/OIDC"]

    @get("/oauth-providers", guards=[requires_tenant_admin], summary="List the organization's OAuth providers")
    async def list_providers(self, db_session: NamedDependency[AsyncSession]) -> list[OAuthProviderRead]:
        return [_provider_read(provider) for provider in await list_oauth_providers(db_session)]

    @post("/oauth-providers", guards=[requires_tenant_admin], status_code=HTTP_201_CREATED, summary="Add a provider")
    async def create_provider(
        self,
        data: JSONBody[OAuthProviderCreate],
        request: AuthRequest,
        actor: NamedDependency[Actor],
        oauth_providers: NamedDependency[OAuthProviderService],
    ) -> OAuthProviderRead:
        return _provider_read(await oauth_providers.create(actor, request.user.tenant_id, data))

    @patch("/oauth-providers/{provider_id:uuid}", guards=[requires_tenant_admin], summary="Change a provider")
    async def update_provider(
        self,
        provider_id: FromPath[UUID],
        data: JSONBody[OAuthProviderUpdate],
        actor: NamedDependency[Actor],
        oauth_providers: NamedDependency[OAuthProviderService],
    ) -> OAuthProviderRead:
        return _provider_read(await oauth_providers.update(actor, provider_id, data))

    @delete("/oauth-providers/{provider_id:uuid}", guards=[requires_tenant_admin], summary="Remove a provider")
    async def delete_provider(
        self,
        provider_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        oauth_providers: NamedDependency[OAuthProviderService],
    ) -> None:
        await oauth_providers.delete(actor, provider_id)

    @get("/tenants/{tenant_slug:str}/oauth-providers", opt=PUBLIC, summary="Sign-in buttons of an organization")
    async def public_providers(
        self, tenant_slug: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> list[OAuthProviderPublic]:
        tenant = await lookup_tenant_by_slug(db_session, tenant_slug)
        if tenant is None:
            raise NotFound(f"No organization is called '{tenant_slug}'.")
        await set_session_tenant(db_session, tenant.id)
        providers = await list_oauth_providers(db_session, enabled_only=True)
        return [
            OAuthProviderPublic(
                name=provider.provider_name,
                kind=provider.kind,
                display_name=provider.display_name,
                authorize_path=f"/api/auth/tenants/{tenant_slug}/oauth/{provider.provider_name}/authorize",
            )
            for provider in providers
        ]

    @get("/tenants/{tenant_slug:str}/oauth/{provider_name:str}/authorize", opt=PUBLIC, summary="Go to the provider")
    async def authorize(
        self,
        tenant_slug: FromPath[str],
        provider_name: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        auth_store: NamedDependency[AuthStore],
        oauth_client: NamedDependency[OAuthClient],
        mode: FromQuery[Literal["api", "portal"]] = "portal",
        return_to: Annotated[str | None, QueryParameter(max_length=500)] = None,
        invitation: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> Redirect:
        tenant = await lookup_tenant_by_slug(db_session, tenant_slug)
        if tenant is None:
            raise NotFound(f"No organization is called '{tenant_slug}'.")
        invitation_id = None
        if invitation is not None:
            # Checked now, so that a dead link fails before the trip to the provider; accepted at the callback.
            found = await open_invitation(db_session, invitation)
            if found is None or found[0].tenant_id != tenant.id:
                raise NotFound("This invitation is invalid or has expired; ask for a new one.")
            invitation_id = found[0].id
        await set_session_tenant(db_session, tenant.id)
        provider = await _enabled_provider(db_session, provider_name)
        url = await _start_authorization(
            auth_store,
            oauth_client,
            provider,
            mode=mode,
            return_to=return_to,
            link_user_id=None,
            invitation_id=invitation_id,
            tenant_slug=tenant_slug,
        )
        return Redirect(url)

    @post("/oauth-links", status_code=HTTP_200_OK, summary="Start linking a provider to the signed-in user")
    async def start_link(
        self,
        data: JSONBody[OAuthLinkRequest],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        auth_store: NamedDependency[AuthStore],
        oauth_client: NamedDependency[OAuthClient],
    ) -> OAuthLinkResponse:
        provider = await _enabled_provider(db_session, data.provider)
        url = await _start_authorization(
            auth_store,
            oauth_client,
            provider,
            mode="api",
            return_to=None,
            link_user_id=request.user.user_id,
            invitation_id=None,
        )
        return OAuthLinkResponse(authorization_url=url)

    @get("/oauth-links", summary="The providers linked to the signed-in user")
    async def list_links(
        self, request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[OAuthConnectionRead]:
        rows = await db_session.execute(
            select(OAuthConnection, OAuthProvider.provider_name)
            .join(OAuthProvider, OAuthProvider.id == OAuthConnection.provider_id)
            .where(OAuthConnection.user_id == request.user.user_id)
        )
        return [
            OAuthConnectionRead(
                id=connection.id,
                provider=name,
                external_email=connection.external_email,
                external_username=connection.external_username,
                created_at=connection.created_at,
                last_used_at=connection.last_used_at,
            )
            for connection, name in rows.all()
        ]

    @delete("/oauth-links/{connection_id:uuid}", summary="Unlink a provider from the signed-in user")
    async def unlink(
        self, connection_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> None:
        connection = await db_session.get(OAuthConnection, connection_id)
        if connection is None or connection.user_id != request.user.user_id:
            raise NotFound("No such link.")
        await db_session.delete(connection)

    @get(CALLBACK_PATH.removeprefix("/api/auth"), opt=PUBLIC, summary="Where the provider sends the user back")
    async def callback(
        self,
        auth_store: NamedDependency[AuthStore],
        oauth_client: NamedDependency[OAuthClient],
        secret_box: NamedDependency[SecretBox],
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        db_session: NamedDependency[AsyncSession],
        auth: NamedDependency[AuthService],
        oauth_state: Annotated[str | None, QueryParameter(name="state", max_length=200)] = None,
        code: Annotated[str | None, QueryParameter(max_length=2048)] = None,
        error: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> Response[Any]:
        flow = await auth_store.take_oauth_state(oauth_state) if oauth_state else None
        if flow is None:
            raise InvalidRequest("This sign-in link is invalid, expired or already used; start the sign-in again.")
        try:
            return await self._complete(flow, oauth_client, secret_box, settings, db_session, auth, code, error)
        except ServiceError as refusal:
            if flow["mode"] != "portal" or flow.get("link_user_id"):
                raise
            # A browser: back to the sign-in page, which says why (the address names the message, never holds it).
            key = await auth_store.save_sign_in_refusal(refusal.detail)
            query = urlencode({"tenant": flow.get("tenant_slug") or "", "refused": key})
            return Redirect(f"{PORTAL_SIGN_IN}?{query}")

    async def _complete(
        self,
        flow: dict[str, Any],
        oauth_client: OAuthClient,
        secret_box: SecretBox,
        settings: Settings,
        db_session: AsyncSession,
        auth: AuthService,
        code: str | None,
        error: str | None,
    ) -> Response[Any]:
        if error or not code:
            raise OAuthFailed(f"The provider did not sign you in ({error or 'no code'}).")
        await set_session_tenant(db_session, UUID(flow["tenant_id"]))
        provider = await db_session.get(OAuthProvider, UUID(flow["provider_id"]))
        if provider is None or not provider.is_enabled:
            raise NotFound("This sign-in provider is no longer available.")
        identity = await oauth_client.identity(
            provider,
            secret_box.decrypt(provider.encrypted_client_secret, context=oauth_client_secret_context(provider)),
            redirect_uri=provider.redirect_uri,
            code=code,
            code_verifier=flow["code_verifier"],
            nonce=flow["nonce"],
        )
        link_user_id = UUID(flow["link_user_id"]) if flow.get("link_user_id") else None
        invitation_id = UUID(flow["invitation_id"]) if flow.get("invitation_id") else None
        mode: SessionMode = "portal" if flow["mode"] == "portal" else "api"
        result = await auth.complete_external_login(
            provider, identity, mode=mode, link_user_id=link_user_id, invitation_id=invitation_id
        )
        if link_user_id is not None:
            return Response({"status": "linked", "provider": provider.provider_name})
        response = _login_response(result, settings)
        if mode == "portal" and result.status == "authenticated":
            return Redirect(_safe_return_path(flow.get("return_to")), cookies=response.cookies)
        return response


async def _enabled_provider(db_session: AsyncSession, name: str) -> OAuthProvider:
    provider = await db_session.scalar(
        select(OAuthProvider).where(OAuthProvider.provider_name == name, OAuthProvider.is_enabled.is_(True))
    )
    if provider is None:
        raise NotFound(f"No sign-in provider is called '{name}' here.")
    return provider


async def _start_authorization(
    store: AuthStore,
    oauth: OAuthClient,
    provider: OAuthProvider,
    *,
    mode: str,
    return_to: str | None,
    link_user_id: UUID | None,
    invitation_id: UUID | None,
    tenant_slug: str | None = None,
) -> str:
    state, nonce, code_verifier = new_oauth_secrets()
    url = await oauth.authorization_url(
        provider, redirect_uri=provider.redirect_uri, state=state, nonce=nonce, code_verifier=code_verifier
    )
    await store.save_oauth_state(
        state,
        {
            "tenant_id": str(provider.tenant_id),
            "provider_id": str(provider.id),
            "nonce": nonce,
            "code_verifier": code_verifier,
            "mode": mode,
            "return_to": _safe_return_path(return_to),
            "link_user_id": str(link_user_id) if link_user_id else None,
            "invitation_id": str(invitation_id) if invitation_id else None,
            "tenant_slug": tenant_slug,
        },
        OAUTH_STATE_TTL_SECONDS,
    )
    return url


class IdentityController(Controller):
    path = "/api/me"
    tags = ["auth"]

    @get("/", opt={ALLOWS_MFA_ENROLLMENT_SCOPE: True}, summary="The signed-in user")
    async def get_current_user(self, request: AuthRequest, db_session: NamedDependency[AsyncSession]) -> UserRead:
        return read_as(UserRead, await organization_user(db_session, request.user.user_id))

    @get("/budgets", summary="What bounds the signed-in user's spending: their budget, then each of their groups'")
    async def get_own_budgets(
        self, request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[BudgetRead]:
        return await budgets_of_member(db_session, request.user.user_id)
