"""Portal sign-in: password, the TOTP or recovery-code step, required MFA enrolment, signing out here or everywhere."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.response import Response, Template
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_400_BAD_REQUEST
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.middleware import SESSION_COOKIE
from app.auth.oauth_providers import sign_in_providers
from app.auth.redis_store import AuthStore
from app.auth.services import MFA_TICKET_TTL_SECONDS, AuthService, LoginResult, self_signup_organization
from app.auth.tokens import Principal
from app.errors import ServiceError
from app.portal.forms import FormSubmission
from app.portal.web import (
    PORTAL,
    PUBLIC_PAGE,
    PortalRequest,
    form_token_valid,
    new_form_token,
    page,
    portal_cookie,
    see_other,
)
from app.settings import Settings

MFA_TICKET_COOKIE = "lyss_mfa_ticket"
LOGIN_CSRF_COOKIE = "lyss_login_csrf"
ENROLMENT_COOKIE = "lyss_enrolment"
ENROLMENT_FORM_COOKIE = "lyss_enrolment_form"
PUBLIC = {PUBLIC_PAGE: True}


def _next_path(value: str | None) -> str:
    # Only portal paths: anything else would make sign-in an open redirect.
    if value and value.startswith(f"{PORTAL}/") and not value.startswith(("//", "/\\")):
        return value
    return f"{PORTAL}/"


def _login_form_cookie(settings: Settings) -> tuple[str, Cookie]:
    return new_form_token(settings, LOGIN_CSRF_COOKIE, f"{PORTAL}/login")


def _enrolment_form_cookie(settings: Settings) -> tuple[str, Cookie]:
    return new_form_token(settings, ENROLMENT_FORM_COOKIE, f"{PORTAL}/enrol")


def _enrolment_page(
    settings: Settings,
    *,
    secret: str | None,
    qr: Markup | None,
    errors: dict[str, Any],
    status_code: int,
) -> Template:
    token, cookie = _enrolment_form_cookie(settings)
    template = page(
        None,
        "mfa_enroll.html",
        status_code=status_code,
        secret=secret,
        qr=qr,
        errors=errors,
        action=f"{PORTAL}/enrol",
        form_token=token,
        required=True,
    )
    template.cookies.append(cookie)
    return template


async def _oauth_buttons(db_session: AsyncSession, tenant_slug: str | None) -> list[dict[str, str]]:
    if not tenant_slug:
        return []
    return [
        {
            "label": provider.display_name or provider.provider_name,
            "href": f"/api/auth/tenants/{tenant_slug}/oauth/{provider.provider_name}/authorize"
            f"?mode=portal&return_to={PORTAL}/",
        }
        for provider in await sign_in_providers(db_session, tenant_slug)
    ]


class SignInController(Controller):
    path = "/"

    async def _login_page(
        self,
        settings: Settings,
        db_session: AsyncSession,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        token, cookie = _login_form_cookie(settings)
        template = page(
            None,
            "login.html",
            status_code=status_code,
            values=values,
            errors=errors or {},
            form_token=token,
            oauth=await _oauth_buttons(db_session, values.get("tenant")),
            signup=bool(values.get("tenant"))
            and await self_signup_organization(db_session, values["tenant"]) is not None,
        )
        template.cookies.append(cookie)
        return template

    @get("/login", opt=PUBLIC, summary="Sign-in page")
    async def login_page(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        db_session: NamedDependency[AsyncSession],
        auth_store: NamedDependency[AuthStore],
        tenant: FromQuery[str | None] = None,
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
        refused: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> Template:
        # A refused sign-in through a provider comes back here; its message was kept server-side.
        message = await auth_store.take_sign_in_refusal(refused) if refused else None
        values = {"tenant": tenant or "", "next": _next_path(next_path)}
        return await self._login_page(settings, db_session, values, errors={"form": message} if message else None)

    @post("/login", opt=PUBLIC, summary="Sign in")
    async def login(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = {"tenant": str(form.get("tenant", "")).strip(), "email": str(form.get("email", "")).strip()}
        values["next"] = _next_path(str(form.get("next") or ""))
        if not form_token_valid(request, form, LOGIN_CSRF_COOKIE):
            errors = {"form": "This sign-in form expired; it has been reloaded, try again."}
            return await self._login_page(settings, db_session, values, errors, HTTP_400_BAD_REQUEST)
        errors = {
            name: "This field is required."
            for name in ("tenant", "email", "password")
            if not str(form.get(name) or "").strip()
        }
        if errors:
            return await self._login_page(settings, db_session, values, errors, HTTP_400_BAD_REQUEST)
        # A refusal names no field: which of the three was wrong is not told. Failures are counted (committed)
        # by the service before it refuses, so the rollback keeps them.
        async with FormSubmission(db_session) as submission:
            result = await auth.login(
                tenant_slug=values["tenant"], email=values["email"], password=str(form["password"]), mode="portal"
            )
        if submission.refused:
            return await self._login_page(settings, db_session, values, submission.errors, submission.status_code)
        return _signed_in(settings, result, values["next"])

    @get("/login/mfa", opt=PUBLIC, summary="Second sign-in step")
    async def mfa_page(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
    ) -> Template | Response[None]:
        if not request.cookies.get(MFA_TICKET_COOKIE):
            return see_other(f"{PORTAL}/login")
        token, cookie = _login_form_cookie(settings)
        template = page(None, "login_mfa.html", values={"next": _next_path(next_path)}, errors={}, form_token=token)
        template.cookies.append(cookie)
        return template

    @post("/login/mfa", opt=PUBLIC, summary="Finish signing in with a code")
    async def mfa(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        form = dict(await request.form())
        next_path = _next_path(str(form.get("next") or ""))
        ticket = request.cookies.get(MFA_TICKET_COOKIE)
        if not ticket:
            return see_other(f"{PORTAL}/login")
        code = str(form.get("code") or "").strip() or None
        recovery_code = str(form.get("recovery_code") or "").strip() or None
        error: str | None = None
        if not form_token_valid(request, form, LOGIN_CSRF_COOKIE):
            error = "This form expired; it has been reloaded, try again."
        elif (code is None) == (recovery_code is None):
            error = "Enter the 6-digit code from your authenticator app, or one recovery code."
        else:
            try:
                result = await auth.complete_mfa(ticket=ticket, code=code, recovery_code=recovery_code)
            except ServiceError as refused:
                error = refused.detail
            else:
                response = _signed_in(settings, result, next_path)
                response.cookies.append(portal_cookie(settings, MFA_TICKET_COOKIE, "", 0, path=f"{PORTAL}/login"))
                return response
        token, cookie = _login_form_cookie(settings)
        field = "recovery_code" if recovery_code and not code else "code"
        template = page(
            None,
            "login_mfa.html",
            status_code=HTTP_400_BAD_REQUEST,
            values={"next": next_path},
            errors={field: error},
            form_token=token,
        )
        template.cookies.append(cookie)
        return template

    async def _enrolling(self, request: Request[Any, Any, State], auth: AuthService) -> Principal | None:
        """The enrolment-only sign-in this browser holds, with the session scoped to its tenant; or None."""
        token = request.cookies.get(ENROLMENT_COOKIE)
        return await auth.enrolment_principal(token) if token else None

    @get("/enrol", opt=PUBLIC, summary="Two-factor enrolment the organization requires before signing in")
    async def enrolment_page(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        principal = await self._enrolling(request, auth)
        if principal is None:
            return see_other(f"{PORTAL}/login")
        enrollment = await auth.start_mfa_enrollment(principal)
        # segno's SVG of the otpauth URI: no user markup in it.
        qr = Markup(enrollment.qr_svg)  # noqa: S704
        return _enrolment_page(settings, secret=enrollment.secret, qr=qr, errors={}, status_code=200)

    @post("/enrol", opt=PUBLIC, summary="Finish the required enrolment")
    async def enrol(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        principal = await self._enrolling(request, auth)
        if principal is None:
            return see_other(f"{PORTAL}/login")
        form = dict(await request.form())
        error: str | None = None
        if not form_token_valid(request, form, ENROLMENT_FORM_COOKIE):
            error = "This form expired; reload the page and try again."
        else:
            try:
                codes = await auth.confirm_mfa(principal, str(form.get("code") or "").strip())
            except ServiceError as refused:
                await db_session.rollback()
                error = refused.detail
            else:
                done = page(None, "recovery_codes.html", codes=codes, done_href=f"{PORTAL}/login", done_label="Sign in")
                done.cookies.append(portal_cookie(settings, ENROLMENT_COOKIE, "", 0, path=f"{PORTAL}/enrol"))
                return done
        pending = await auth.pending_mfa_enrollment(principal)
        return _enrolment_page(
            settings,
            secret=pending.secret if pending else None,
            qr=Markup(pending.qr_svg) if pending else None,  # noqa: S704  # segno's SVG, as above
            errors={"code": error},
            status_code=HTTP_400_BAD_REQUEST,
        )

    @post("/logout", summary="Sign out of this browser")
    async def logout(
        self,
        settings: NamedDependency[Settings],
        request: PortalRequest,
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        await auth.logout(request.user)
        response = see_other(f"{PORTAL}/login")
        response.cookies.append(portal_cookie(settings, SESSION_COOKIE, "", 0, path="/"))
        return response

    @post("/logout-all", summary="Sign out everywhere")
    async def logout_everywhere(
        self,
        settings: NamedDependency[Settings],
        request: PortalRequest,
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        await auth.logout_everywhere(request.user)
        response = see_other(f"{PORTAL}/login")
        response.cookies.append(portal_cookie(settings, SESSION_COOKIE, "", 0, path="/"))
        return response


def _signed_in(settings: Settings, result: LoginResult, next_path: str) -> Response[None]:
    response = see_other(next_path)
    if result.status == "mfa_required" and result.mfa_ticket:
        response = see_other(f"{PORTAL}/login/mfa?next={next_path}")
        response.cookies.append(
            portal_cookie(
                settings, MFA_TICKET_COOKIE, result.mfa_ticket, MFA_TICKET_TTL_SECONDS, path=f"{PORTAL}/login"
            )
        )
        return response
    session = result.session
    if result.status == "mfa_enrollment_required" and session is not None and session.access_token:
        # The organization requires MFA of admins: this sign-in may only enrol. The enrolment-only token
        # lives in a cookie that only the enrolment page receives.
        response = see_other(f"{PORTAL}/enrol")
        response.cookies.append(
            portal_cookie(settings, ENROLMENT_COOKIE, session.access_token, session.expires_in, path=f"{PORTAL}/enrol")
        )
        return response
    if result.status != "authenticated" or session is None or session.session_token is None:
        return see_other(f"{PORTAL}/login")
    response.cookies.append(
        portal_cookie(settings, SESSION_COOKIE, session.session_token, session.expires_in, path="/")
    )
    response.status_code = HTTP_303_SEE_OTHER
    return response
