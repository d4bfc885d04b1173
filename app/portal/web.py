"""The portal's plumbing: session-cookie sign-in, CSRF on every form, security headers, pages and HTML errors."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import msgspec
import structlog
from litestar import Request, Response
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.exceptions.responses import create_exception_response
from litestar.middleware import ASGIMiddleware
from litestar.response import Template
from litestar.response.redirect import ASGIRedirectResponse
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_403_FORBIDDEN, HTTP_405_METHOD_NOT_ALLOWED
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.middleware import SESSION_COOKIE
from app.auth.services import ADMIN_ROLES, authenticate_portal_session
from app.auth.tokens import Principal, csrf_token, csrf_token_matches
from app.errors import ServiceError
from app.observability.errors import RETRY_AFTER, UNAVAILABLE_DETAIL, database_refusal, unavailable_cause
from app.observability.middleware import client_context
from app.schemas import read_as
from app.settings import KeyRing, Settings
from app.tenants.services import Actor, user_and_organization

PORTAL = "/portal"
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# A page anyone may open (sign-in, static files) carries this in its `opt`.
PUBLIC_PAGE = "portal_public"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

# No inline script or style anywhere: every script and stylesheet is a file Lyss serves itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_PRIVATE_CACHE = (b"cache-control", b"no-store")

# The confirmation a form's redirect asks the next page to show, by name: a cookie names one of these, so
# nothing a link or a cookie carries is ever shown as text.
NOTICE_COOKIE = "lyss_notice"
NOTICES = {
    "channel_added": "The channel is added.",
    "channel_saved": "The channel is saved.",
    "channel_enabled": "The channel is enabled.",
    "channel_disabled": "The channel is disabled.",
    "channel_removed": "The channel is removed.",
    "channel_tested": "The channel test has run; its result is in the list.",
    "key_saved": "The API key is saved.",
    "key_revoked": "The API key is revoked.",
    "role_saved": "The user's role is saved.",
    "budget_saved": "The budget and policy are saved.",
    "user_deactivated": "The user is deactivated.",
    "user_reactivated": "The user is reactivated.",
    "mfa_reset": "The user's two-factor authentication is reset.",
    "group_created": "The group is created.",
    "group_saved": "The group is saved.",
    "group_deleted": "The group is deleted.",
    "member_added": "The member is added.",
    "member_removed": "The member is removed.",
    "webhook_saved": "The webhook is saved.",
    "webhook_removed": "The webhook is removed.",
    "webhook_test_sent": "A test event is on its way; its attempts appear below within seconds.",
    "knowledge_base_created": "The knowledge base is created. Upload its documents below.",
    "knowledge_base_saved": "The knowledge base's settings are saved.",
    "knowledge_base_deleted": "The knowledge base is deleted, with its documents and their files.",
    "document_uploaded": "The document is uploaded and queued for ingestion.",
    "document_duplicate": "This file is already in this base: nothing new was stored.",
    "document_deleted": "The document is deleted, with its passages and its file.",
    "tenant_created": "The organization is created.",
    "tenant_saved": "The organization is saved.",
    "tenant_suspended": "The organization is suspended: its users are signed out and its keys refused.",
    "tenant_reactivated": "The organization is active again.",
}
_NOTICE_STATE = "portal_notice"
# Gone with the first page that shows it: an expired cookie in the same response.
_NOTICE_SHOWN = (b"set-cookie", f"{NOTICE_COOKIE}=; Max-Age=0; Path={PORTAL}; HttpOnly; SameSite=Lax".encode())

logger = structlog.get_logger(__name__)


class PortalMiddleware(ASGIMiddleware):
    """Every portal response gets the security headers; a page needs a live session cookie (else the
    sign-in page) and every form post the session's CSRF token (else 403)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, keyring: KeyRing, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.keyring = keyring
        self.session_maker = session_maker

    def __deepcopy__(self, memo: dict[int, Any]) -> PortalMiddleware:
        # Litestar copies a router as it registers it; the key ring and the sessions are the process's own.
        return self

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        public = bool(scope["route_handler"].opt.get(PUBLIC_PAGE))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(header for header in SECURITY_HEADERS if header[0] not in names)
                if not public:
                    headers.append(_PRIVATE_CACHE)
                if notice and dict(headers).get(b"content-type", b"").startswith(b"text/html"):
                    headers.append(_NOTICE_SHOWN)
                message["headers"] = headers
            await send(message)

        request: Request[Any, Any, State] = Request(scope, receive)
        notice = None if public or request.method != "GET" else request.cookies.get(NOTICE_COOKIE)
        if notice:
            scope.setdefault("state", {})[_NOTICE_STATE] = notice
        if public:
            await next_app(scope, receive, send_with_headers)
            return
        session_token = request.cookies.get(SESSION_COOKIE)
        principal = await authenticate_portal_session(self.session_maker, session_token) if session_token else None
        if principal is None or session_token is None:
            target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            redirect = ASGIRedirectResponse(
                path=f"{PORTAL}/login?next={quote(target, safe='')}", status_code=HTTP_303_SEE_OTHER
            )
            await redirect(scope, receive, send_with_headers)
            return
        if request.method not in _SAFE_METHODS:
            presented = request.headers.get(CSRF_HEADER) or ""
            if not presented and request.content_type[0] in {
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            }:
                # Litestar caches the parsed form in the scope: the handler reads it again for free.
                presented = str((await request.form()).get(CSRF_FIELD) or "")
            if not csrf_token_matches(self.keyring, session_token, presented):
                logger.warning("portal form without a valid CSRF token", path=scope["path"])
                forbidden = Response(
                    "This form has expired or did not come from Lyss. Go back, reload the page and try again.",
                    status_code=HTTP_403_FORBIDDEN,
                    media_type="text/plain",
                )
                await forbidden.to_asgi_response(None, request)(scope, receive, send_with_headers)
                return
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant_id))
        scope["user"] = principal
        scope["auth"] = session_token
        await next_app(scope, receive, send_with_headers)


class NavItem(msgspec.Struct, frozen=True):
    path: str
    label: str

    def is_current(self, here: str) -> bool:
        """Whether the page at `here` is this entry's page or one below it (a channel's edit page is Channels)."""
        return here == self.path or (self.path != f"{PORTAL}/" and here.startswith(f"{self.path}/"))


class NavGroup(msgspec.Struct, frozen=True):
    label: str
    items: tuple[NavItem, ...]

    def is_current(self, here: str) -> bool:
        return any(item.is_current(here) for item in self.items)


_JOBS = NavItem(f"{PORTAL}/jobs", "Jobs")
_USE = (
    NavItem(f"{PORTAL}/", "Dashboard"),
    NavItem(f"{PORTAL}/chat", "Chat"),
    NavItem(f"{PORTAL}/conversations", "Conversations"),
    NavItem(f"{PORTAL}/memories", "Memories"),
    NavItem(f"{PORTAL}/knowledge", "Knowledge"),
    NavItem(f"{PORTAL}/usage", "Usage"),
    NavItem(f"{PORTAL}/tokens", "API keys"),
)
# Two menus rather than one row of a dozen links, which wrapped onto two lines at 1280 px.
ADMIN_NAV = (
    NavGroup("Use", _USE),
    NavGroup(
        "Manage",
        (
            NavItem(f"{PORTAL}/channels", "Channels"),
            NavItem(f"{PORTAL}/prices", "Prices"),
            NavItem(f"{PORTAL}/users", "Users"),
            NavItem(f"{PORTAL}/groups", "Groups"),
            NavItem(f"{PORTAL}/settings", "Settings"),
            NavItem(f"{PORTAL}/webhooks", "Webhooks"),
            NavItem(f"{PORTAL}/audit", "Audit log"),
            _JOBS,
        ),
    ),
)
# An end user manages nothing but their own jobs, which sit with the rest of what they use.
USER_NAV = (NavGroup("Use", (*_USE, _JOBS)),)
# The platform operator's (super_admin) pages: every organization, not only their own.
PLATFORM_NAV = NavGroup("Platform", (NavItem(f"{PORTAL}/platform/tenants", "Tenants"),))


def navigation(is_admin: bool, is_operator: bool = False) -> tuple[NavGroup, ...]:
    """The layout's menus for a viewer; the account page is the viewer's email beside "Sign out"."""
    menus = ADMIN_NAV if is_admin else USER_NAV
    return (*menus, PLATFORM_NAV) if is_operator else menus


class ViewerAccount(msgspec.Struct, frozen=True):
    id: UUID
    email: str
    role: str
    mfa_enabled: bool
    last_login_at: datetime.datetime | None


class ViewerOrganization(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    slug: str
    currency: str


class Viewer(msgspec.Struct, frozen=True):
    """Who is looking at a page: their account, organization and the CSRF token forms carry.

    Plain values, not ORM rows: a page re-rendered after a rollback must not lazy-load them again.
    """

    principal: Principal
    user: ViewerAccount
    organization: ViewerOrganization
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.principal.role in ADMIN_ROLES

    @property
    def is_operator(self) -> bool:
        """The platform operator, who sees every organization's aggregates (never their rows)."""
        return self.principal.role == "super_admin"


PortalRequest = Request[Principal, str, State]


async def provide_viewer(
    request: PortalRequest, db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
) -> Viewer:
    user, organization = await user_and_organization(db_session, request.user.user_id)
    return Viewer(
        principal=request.user,
        user=read_as(ViewerAccount, user),
        organization=read_as(ViewerOrganization, organization),
        csrf_token=csrf_token(settings.jwt_keyring, request.auth),
    )


async def provide_admin_viewer(
    request: PortalRequest, db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
) -> Viewer:
    """The viewer of an administrators' page (403 for anyone else)."""
    viewer = await provide_viewer(request, db_session, settings)
    require_admin(viewer)
    return viewer


async def provide_operator_viewer(
    request: PortalRequest, db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
) -> Viewer:
    """The viewer of a platform operator's page (403 for anyone else, a tenant's admins included)."""
    viewer = await provide_viewer(request, db_session, settings)
    if not viewer.is_operator:
        raise PermissionDeniedException("This page is for the platform operator.")
    return viewer


def viewer_actor(viewer: Viewer, request: PortalRequest) -> Actor:
    """The viewer as the audit trail names them, with the request's address and agent."""
    return Actor(name=viewer.user.email, user_id=viewer.user.id, client=client_context(request))


async def provide_viewer_actor(viewer: NamedDependency[Viewer], request: PortalRequest) -> Actor:
    """The portal's `actor` (given to the services that audit): the viewer, already read.

    A page that asks for a service built with the app-wide `actor` would otherwise read the caller's email in
    parallel with the viewer, and a session serves one query at a time.
    """
    return viewer_actor(viewer, request)


def portal_cookie(settings: Settings, key: str, value: str, max_age: int, path: str = PORTAL) -> Cookie:
    """A cookie of the portal's: HttpOnly, Secure behind https; SameSite=Strict except the session's (Lax, so
    that a link from elsewhere arrives signed in)."""
    return Cookie(
        key=key,
        value=value,
        max_age=max_age,
        path=path,
        httponly=True,
        secure=settings.cookies_secure,
        samesite="strict" if key != SESSION_COOKIE else "lax",
    )


def new_form_token(settings: Settings, key: str, path: str) -> tuple[str, Cookie]:
    """A token for a form shown before there is a session, and the cookie that carries it too.

    The form must send back what its cookie holds (double submit): another site can make a browser post the
    form, but not read the cookie, so it cannot sign someone in to the attacker's account, accept an invitation
    or set a password of its choosing.
    """
    value = secrets.token_urlsafe(24)
    return value, portal_cookie(settings, key, value, 3600, path=path)


def form_token_valid(request: Request[Any, Any, State], form: Mapping[str, Any], key: str) -> bool:
    expected = request.cookies.get(key) or ""
    return bool(expected) and secrets.compare_digest(expected, str(form.get("form_token") or ""))


def page(viewer: Viewer | None, template: str, *, status_code: int = 200, **context: Any) -> Template:
    """A full page: the layout's navigation follows the viewer's role."""
    return Template(template_name=template, context={"viewer": viewer, **context}, status_code=status_code)


def see_other(path: str, notice: str | None = None) -> Response[None]:
    """After a successful form post: the browser loads `path` with GET (no re-post on reload), which shows
    the confirmation `notice` (a name in `NOTICES`) once."""
    cookies = []
    if notice is not None:
        if notice not in NOTICES:
            raise ValueError(f"no such notice: {notice}")
        # Not `Secure` even behind TLS: it names a fixed message, no secret, and must reach a plain-HTTP laptop.
        cookies.append(Cookie(key=NOTICE_COOKIE, value=notice, max_age=60, path=PORTAL, httponly=True, samesite="lax"))
    return Response(None, status_code=HTTP_303_SEE_OTHER, headers={"location": path}, cookies=cookies)


def flashed_notice(request: Request[Any, Any, State]) -> str | None:
    """The confirmation this page shows, if the form before it asked for one (unknown names show nothing)."""
    return NOTICES.get(request.scope.get("state", {}).get(_NOTICE_STATE) or "")


def require_admin(viewer: Viewer) -> None:
    if not viewer.is_admin:
        raise PermissionDeniedException("This page is for the organization's administrators.")


def _error_page(
    request: Request[Any, Any, State], status_code: int, message: str, headers: dict[str, str] | None = None
) -> Template:
    signed_in = isinstance(request.scope.get("user"), Principal)
    template = page(
        None, "error.html", status_code=status_code, message=message, status=status_code, signed_in=signed_in
    )
    template.headers.update(headers or {})
    return template


def service_error_page(request: Request[Any, Any, State], error: ServiceError) -> Template:
    return _error_page(request, error.status_code, error.detail, error.headers)


def http_error_page(request: Request[Any, Any, State], error: HTTPException) -> Template | Response[None]:
    if isinstance(error, NotAuthorizedException):
        return see_other(f"{PORTAL}/login")
    if error.status_code >= 500:
        return internal_error_page(request, error)
    return _error_page(request, error.status_code, str(error.detail))


def _page_with_get(request: Request[Any, Any, State], path: str) -> str:
    """The nearest page above `path` (a POST-only form's list, or the dashboard) that a browser can load."""
    parts = path.rstrip("/").split("/")
    while len(parts) > 2:
        parts.pop()
        candidate = "/".join(parts)
        try:
            request.app.asgi_router.handle_routing(candidate, "GET")
        except (NotFoundException, MethodNotAllowedException):
            continue
        return candidate if candidate != PORTAL else f"{PORTAL}/"
    return f"{PORTAL}/"


def routing_error(request: Request[Any, Any, State], error: HTTPException) -> Response[Any]:
    """No route, or not this method: a page under /portal (its handlers never ran, nor its middleware), JSON
    elsewhere as Litestar answers by default.

    Loading a form's POST-only address (a reload, a bookmark) goes to the page above it instead of a 405.
    """
    if not (request.url.path == PORTAL or request.url.path.startswith(f"{PORTAL}/")):
        return create_exception_response(request, error)
    if isinstance(error, MethodNotAllowedException) and request.method in {"GET", "HEAD"}:
        return see_other(_page_with_get(request, request.url.path))
    if "route_handler" in request.scope:  # raised by a page: the portal's own handling
        return http_error_page(request, error)
    if isinstance(error, MethodNotAllowedException):
        message = "This address does not take that kind of request. Go back to the page and use its buttons."
    else:
        message = "There is no page at this address. It may have moved, or the link may be mistyped."
    headers = {name.decode(): value.decode() for name, value in [*SECURITY_HEADERS, _PRIVATE_CACHE]}
    if error.status_code == HTTP_405_METHOD_NOT_ALLOWED and error.headers:
        headers.update(error.headers)
    return _error_page(request, error.status_code, message, headers)


def internal_error_page(request: Request[Any, Any, State], error: Exception) -> Template:
    if (refusal := database_refusal(error)) is not None:
        return _error_page(request, *refusal)
    if (cause := unavailable_cause(error)) is not None:
        logger.warning("dependency unavailable", path=request.url.path, error=type(cause).__name__)
        return _error_page(request, 503, UNAVAILABLE_DETAIL, RETRY_AFTER)
    # The stack is in the log under the request id; the page shows only that id.
    logger.error("portal page failed", path=request.url.path, exc_info=error)
    request_id = request.scope.get("state", {}).get("request_id")
    return _error_page(
        request, 500, f"Something went wrong on our side. Try again; if it persists, quote request id {request_id}."
    )
