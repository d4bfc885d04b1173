"""Authentication middleware: a valid `Authorization: Bearer <access JWT>` becomes `request.user`."""

from __future__ import annotations

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.auth.tokens import InvalidAccessToken, verify_access_token
from app.settings import KeyRing

JWT_KEYRING_STATE_KEY = "jwt_keyring"


class AccessTokenMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("Send 'Authorization: Bearer <access token>'.")
        keyring: KeyRing = connection.app.state[JWT_KEYRING_STATE_KEY]
        try:
            principal = verify_access_token(keyring, token.strip())
        except InvalidAccessToken:
            raise NotAuthorizedException("The access token is invalid or expired; sign in again.") from None
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant_id))
        return AuthenticationResult(user=principal, auth=token)
