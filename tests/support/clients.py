"""HTTP clients on an app in the test's event loop, and the headers that make a request act as someone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.main import create_app
from app.settings import KeyRing, Settings
from db.auth import User

Client = httpx.AsyncClient
# `auth_headers(user)`: headers that make a request act as `user`.
AuthHeaders = Callable[[User], dict[str, str]]


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[Client]:
    """The app in this event loop, lifespan included (its background tasks share the loop with requests)."""
    app: Any = create_app(settings)  # an ASGI app; Litestar's precise scope types do not match httpx's alias
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as test_client,
    ):
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def access_headers(jwt_keyring: KeyRing, user: User) -> dict[str, str]:
    """A real access token for `user` in a session of its own, signed with `jwt_keyring`."""
    principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
    return bearer(issue_access_token(jwt_keyring, principal, ttl_seconds=300))
