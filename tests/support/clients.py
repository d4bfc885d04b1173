"""HTTP clients on an app in the test's event loop, and the headers that make a request act as someone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from litestar import Litestar
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.main import create_app
from app.settings import KeyRing, Settings
from db.auth import User

Client = httpx.AsyncClient
# `auth_headers(user)`: headers that make a request act as `user`.
AuthHeaders = Callable[[User], dict[str, str]]


@asynccontextmanager
async def client_of(app: Litestar) -> AsyncIterator[Client]:
    """A client on an app already started: a browser of its own (its own cookies), in this event loop."""
    asgi: Any = app  # Litestar's precise scope types do not match httpx's alias
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://testserver.local") as client:
        yield client


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[Client]:
    """A client on an app of its own, lifespan included (its background tasks share the loop with requests)."""
    app = create_app(settings)
    asgi: Any = app
    async with LifespanManager(asgi), client_of(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def access_headers(jwt_keyring: KeyRing, user: User) -> dict[str, str]:
    """A real access token for `user` in a session of its own, signed with `jwt_keyring`."""
    principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
    return bearer(issue_access_token(jwt_keyring, principal, ttl_seconds=300))
