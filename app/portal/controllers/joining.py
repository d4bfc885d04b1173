"""Getting an account from a browser: accepting an invitation link, and signing up where the organization allows it."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.middleware import SESSION_COOKIE
from app.auth.oauth_providers import list_oauth_providers
from app.auth.passwords import MIN_PASSWORD_LENGTH
from app.auth.schemas import Email, Name, Password, Slug
from app.auth.services import AuthService, LoginResult, self_signup_organization
from app.portal.forms import FORM_WIDE, FormSubmission, parse
from app.portal.web import PORTAL, PUBLIC_PAGE, form_token_valid, new_form_token, page, portal_cookie, see_other
from app.settings import Settings
from app.tenants.accounts import open_invitation

PUBLIC = {PUBLIC_PAGE: True}
JOIN_FORM_COOKIE = "lyss_join_form"
SIGNUP_FORM_COOKIE = "lyss_signup_form"
_EXPIRED_FORM = "This form expired; it has been reloaded, try again."


class JoinForm(msgspec.Struct, frozen=True):
    password: Password
    full_name: Name | None = None


class SignUpForm(msgspec.Struct, frozen=True):
    tenant: Slug
    email: Email
    password: Password
    full_name: Name | None = None


class InvitationSeen(msgspec.Struct, frozen=True):
    """What the invitee is shown of their invitation (plain values: the page outlives a rollback)."""

    organization: str
    slug: str
    email: str
    role: str
    expires_at: datetime.datetime
    # (label, address): the organization's sign-in providers, each starting a sign-in that accepts this invitation.
    join_with: list[tuple[str, str]] = []


def _form_page(
    settings: Settings, template: str, cookie_key: str, path: str, status_code: int, **context: Any
) -> Template:
    token, cookie = new_form_token(settings, cookie_key, path)
    response = page(
        None, template, status_code=status_code, form_token=token, min_password_length=MIN_PASSWORD_LENGTH, **context
    )
    response.cookies.append(cookie)
    return _unstored(response)


def _unstored(response: Template) -> Template:
    # Public pages may be cached, but not these: their address is the invitation and they show whom it is for.
    response.headers["cache-control"] = "no-store"
    return response


def _invalid_link() -> Template:
    return _unstored(page(None, "join_invalid.html", status_code=HTTP_404_NOT_FOUND))


def _signed_in(settings: Settings, result: LoginResult, slug: str) -> Response[None]:
    session = result.session
    if result.status != "authenticated" or session is None or session.session_token is None:
        # An administrator where the organization requires MFA: the sign-in page leads them through enrolment.
        return see_other(f"{PORTAL}/login?tenant={slug}")
    response = see_other(f"{PORTAL}/")
    response.cookies.append(portal_cookie(settings, SESSION_COOKIE, session.session_token, session.expires_in, "/"))
    return response


def _form_values(form: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip() for name in names}


class JoiningPages(Controller):
    path = "/"

    def _join_page(
        self,
        settings: Settings,
        token: str,
        invitation: InvitationSeen,
        values: dict[str, str],
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        return _form_page(
            settings,
            "join.html",
            JOIN_FORM_COOKIE,
            f"{PORTAL}/join",
            status_code,
            action=f"{PORTAL}/join/{token}",
            invitation=invitation,
            values=values,
            errors=errors or {},
        )

    async def _invitation(self, db_session: AsyncSession, token: str) -> InvitationSeen | None:
        found = await open_invitation(db_session, token)
        if found is None:
            return None
        invitation, organization = found
        query = urlencode({"mode": "portal", "return_to": f"{PORTAL}/", "invitation": token})
        return InvitationSeen(
            organization=organization.name,
            slug=organization.slug,
            email=invitation.email,
            role=invitation.role,
            expires_at=invitation.expires_at,
            join_with=[
                (
                    provider.display_name or provider.provider_name,
                    f"/api/auth/tenants/{quote(organization.slug)}/oauth/{quote(provider.provider_name)}/authorize?{query}",
                )
                for provider in await list_oauth_providers(db_session, enabled_only=True)
            ],
        )

    @get("/join/{token:str}", opt=PUBLIC, summary="Accept an invitation")
    async def join_page(
        self, token: FromPath[str], settings: NamedDependency[Settings], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        invitation = await self._invitation(db_session, token)
        if invitation is None:
            return _invalid_link()
        return self._join_page(settings, token, invitation, {})

    @post("/join/{token:str}", opt=PUBLIC, summary="Accept an invitation: choose a password, signed in")
    async def join(
        self,
        token: FromPath[str],
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        invitation = await self._invitation(db_session, token)
        if invitation is None:
            return _invalid_link()
        form = dict(await request.form())
        values = _form_values(form, ("full_name",))
        if not form_token_valid(request, form, JOIN_FORM_COOKIE):
            errors = {FORM_WIDE: _EXPIRED_FORM}
            return self._join_page(settings, token, invitation, values, errors, HTTP_400_BAD_REQUEST)
        async with FormSubmission(db_session) as submission:
            data = parse(JoinForm, values | {"password": str(form.get("password") or "")})
            user = await auth.accept_invitation(token=token, password=data.password, full_name=data.full_name)
            result = await auth.sign_in_new_account(user, how="invitation")
        if submission.refused:
            if submission.status_code == HTTP_404_NOT_FOUND:
                return _invalid_link()
            return self._join_page(settings, token, invitation, values, submission.errors, submission.status_code)
        return _signed_in(settings, result, invitation.slug)

    async def _signup_page(
        self,
        settings: Settings,
        db_session: AsyncSession,
        values: dict[str, str],
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        organization = await self_signup_organization(db_session, values["tenant"]) if values.get("tenant") else None
        return _form_page(
            settings,
            "signup.html",
            SIGNUP_FORM_COOKIE,
            f"{PORTAL}/signup",
            status_code,
            organization=organization.name if organization else None,
            # A link to an organization that takes no sign-ups says so, with no form to fill in for nothing.
            closed=bool(values.get("tenant")) and organization is None and not errors,
            values=values,
            errors=errors or {},
        )

    @get("/signup", opt=PUBLIC, summary="Create an account, where the organization allows it")
    async def signup_page(
        self,
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        tenant: FromQuery[str | None] = None,
    ) -> Template:
        slug = (tenant or "").strip().lower()[:100]
        return await self._signup_page(settings, db_session, {"tenant": slug})

    @post("/signup", opt=PUBLIC, summary="Create an account: signed in")
    async def signup(
        self,
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = _form_values(form, ("tenant", "email", "full_name"))
        values["tenant"] = values["tenant"].lower()
        if not form_token_valid(request, form, SIGNUP_FORM_COOKIE):
            errors = {FORM_WIDE: _EXPIRED_FORM}
            return await self._signup_page(settings, db_session, values, errors, HTTP_400_BAD_REQUEST)
        async with FormSubmission(db_session) as submission:
            data = parse(SignUpForm, values | {"password": str(form.get("password") or "")})
            user = await auth.sign_up(
                tenant_slug=data.tenant, email=data.email, password=data.password, full_name=data.full_name
            )
            result = await auth.sign_in_new_account(user, how="sign_up")
        if submission.refused:
            return await self._signup_page(settings, db_session, values, submission.errors, submission.status_code)
        return _signed_in(settings, result, data.tenant)
