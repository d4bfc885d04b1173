"""Authentication middleware: a bearer access token or a portal session cookie becomes `request.user`."""

from __future__ import annotations

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.redis_store import AuthStore
from app.auth.services import authenticate_portal_session
from app.auth.tokens import InvalidToken, Principal, csrf_token_matches, verify_access_token
from app.settings import KeyRing

SESSION_COOKIE = "lyss_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class AuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Given the JWT key ring, the session-revocation store and the sessions it checks cookies against."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        auth_store: AuthStore,
        session_maker: async_sessionmaker[AsyncSession],
        exclude: str | list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self.keyring = keyring
        self.auth_store = auth_store
        self.session_maker = session_maker

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        authorization = connection.headers.get("authorization")
        if authorization:
            principal = await _bearer_principal(authorization, self.keyring, self.auth_store)
        elif session_token := connection.cookies.get(SESSION_COOKIE):
            principal = await _cookie_principal(connection, session_token, self.keyring, self.session_maker)
        else:
            raise NotAuthorizedException("Sign in: send 'Authorization: Bearer <access token>' or a session cookie.")
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant_id))
        return AuthenticationResult(user=principal, auth=principal.session_id)


async def _bearer_principal(authorization: str, keyring: KeyRing, store: AuthStore) -> Principal:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Send 'Authorization: Bearer <access token>'.")
    try:
        principal = verify_access_token(keyring, token.strip())
    except InvalidToken:
        raise NotAuthorizedException("The access token is invalid or expired; refresh it or sign in again.") from None
    if await store.session_revoked(principal.session_id):
        raise NotAuthorizedException("This session has ended; sign in again.")
    return principal


async def _cookie_principal(
    connection: ASGIConnection,  # type: ignore[type-arg]
    session_token: str,
    keyring: KeyRing,
    session_maker: async_sessionmaker[AsyncSession],
) -> Principal:
    principal = await authenticate_portal_session(session_maker, session_token)
    if principal is None:
        raise NotAuthorizedException("This session has ended; sign in again.")
    # The cookie rides along with any request the browser makes, including forged cross-site ones;
    # the CSRF header proves the request came from a page that was given the token.
    if connection.scope.get("method") not in _SAFE_METHODS and not csrf_token_matches(
        keyring, session_token, connection.headers.get(CSRF_HEADER, "")
    ):
        raise PermissionDeniedException("Missing or wrong X-CSRF-Token header for this session.")
    return principal
