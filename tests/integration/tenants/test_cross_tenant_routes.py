"""Tenant isolation through HTTP: every route with an id, read from the route table, gives another tenant a 404."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.settings import Settings
from db.auth import Invitation, OAuthConnection, OAuthProvider, User
from db.chat import Attachment, Conversation
from db.knowledge import KnowledgeBase, KnowledgeDocument
from db.memory import Memory
from db.provider import ApiToken, Channel, UsageLog
from db.session import tenant_session
from db.tenant import Job, UserGroup, WebhookEndpoint
from tests.support.clients import AuthHeaders, Client, client_of
from tests.support.gateway import add_channel, issue_key, token_id_of
from tests.support.jobs import submit
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.rows import ROW_FACTORIES
from tests.support.tenants import TenantRows


async def test_each_tenant_sees_only_its_own_organization(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    for tenant in (tenant_a, tenant_b):
        response = await client.get("/api/tenant", headers=auth_headers(tenant.user))
        assert response.status_code == 200
        assert (response.json()["id"], response.json()["slug"]) == (str(tenant.id), tenant.slug)


async def test_a_user_id_from_another_tenant_is_a_404_not_its_data(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
) -> None:
    # Even a token that (by some bug) pairs tenant B with A's user id reads nothing of A:
    # the database, not the handler, decides what B can see.
    confused = Principal(user_id=tenant_a.admin.id, tenant_id=tenant_b.id, role="tenant_admin", session_id=uuid7())
    token = issue_access_token(settings.jwt_keyring, confused, ttl_seconds=300)
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert tenant_a.admin.email not in response.text


# --- every route with an id in its path, from the route table ---------------------------------------

# What each path id names: a key of what `rows_of` makes. A route added later with one of these ids is covered
# as it is; a route with an id not named here fails `test_every_id_in_a_route_is_known` until it is added.
ROW_OF_PARAMETER = {
    "attachment_id": "attachment",
    "base_id": "kb_base",
    "channel_id": "channel",
    "connection_id": "oauth_connection",
    "conversation_id": "conversation",
    "document_id": "kb_document",
    "group_id": "group",
    "invitation_id": "invitation",
    "job_id": "job",
    "memory_id": "memory",
    "provider_id": "oauth_provider",
    "token_id": "token",
    "usage_id": "usage",
    "user_id": "user",
    "webhook_id": "webhook",
}
# Where a route's id names a narrower row than its name says (an export is a job of one kind).
ROW_OF_ROUTE_PARAMETER = {
    ("/api/usage/exports/{job_id:uuid}", "job_id"): "usage_export",
    ("/api/memories/exports/{job_id:uuid}", "job_id"): "memory_export",
    ("/portal/usage/exports/{job_id:uuid}", "job_id"): "usage_export",
}
# Path parameters that name no tenant's row, and why they are not this test's business.
NOT_ROW_IDS = {
    "tenant_slug": "sign-in before any tenant is known: public by design, tested in auth/",
    "provider_name": "the OAuth provider's name within the slug's tenant, public for the sign-in buttons",
    "model": "a model name: each tenant prices and routes its own (B's PUT makes a price or strategy of B's)",
    "name": "a model alias's name: each tenant names its own (B's PUT makes an alias of B's)",
    "token": "a signed, short-lived download link: the signature is the credential (storage/ tests it)",
    "action": "the verb of a portal form (`disable`, `enable`, ...), next to the channel's id",
    "reset_token": "a password reset link: the token names its tenant and is the credential (portal/ tests it)",
    "file_path": "a static file of the portal",
    "path": "the OpenAPI document's format",
}
# What tenant B sends: a change that would show in A's rows if it landed. Other writes send no body; a route
# that reads its body before the id (a 400 where a 404 is due) needs one here.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/auth/oauth-providers/{provider_id:uuid}"): {"is_enabled": False},
    ("PATCH", "/api/channels/{channel_id:uuid}"): {"name": "taken over", "priority": 99},
    ("PATCH", "/api/conversations/{conversation_id:uuid}"): {"title": "taken over"},
    ("PATCH", "/api/groups/{group_id:uuid}"): {"name": "taken over"},
    ("PATCH", "/api/groups/{group_id:uuid}/budget"): {"quota": 1},
    ("PATCH", "/api/users/{user_id:uuid}/budget"): {"quota": 1},
    ("POST", "/api/groups/{group_id:uuid}/members"): {"user_id": "00000000-0000-0000-0000-000000000000"},
    ("POST", "/api/conversations/{conversation_id:uuid}/messages"): {"content": "taken over"},
    ("PATCH", "/api/memories/{memory_id:uuid}"): {"text": "taken over"},
    ("PATCH", "/api/knowledge-bases/{base_id:uuid}"): {"name": "taken over", "chunk_tokens": 64, "chunk_overlap": 0},
    ("POST", "/api/knowledge-bases/{base_id:uuid}/search"): {"query": "taken over"},
    ("POST", "/api/knowledge-bases/{base_id:uuid}/documents/from-url"): {"url": "https://taken.example.com/a.md"},
    ("PATCH", "/api/tokens/{token_id:uuid}"): {"name": "taken over", "status": "disabled"},
    ("PUT", "/api/users/{user_id:uuid}/role"): {"role": "end_user"},
    ("PATCH", "/api/webhooks/{webhook_id:uuid}"): {"url": "https://taken.example.com/", "enabled": False},
}
UPLOADS = {("POST", "/api/conversations/{conversation_id:uuid}/attachments")}
# A portal form's fields: enough to get past the form to the lookup.
FORM_FIELDS = {"name": "taken over", "role": "end_user"}
MODELS = {
    "attachment": Attachment,
    "channel": Channel,
    "conversation": Conversation,
    "group": UserGroup,
    "invitation": Invitation,
    "job": Job,
    "kb_base": KnowledgeBase,
    "kb_document": KnowledgeDocument,
    "memory": Memory,
    "memory_export": Job,
    "oauth_connection": OAuthConnection,
    "oauth_provider": OAuthProvider,
    "token": ApiToken,
    "usage": UsageLog,
    "usage_export": Job,
    "user": User,
    "webhook": WebhookEndpoint,
}


class IdRoute(msgspec.Struct, frozen=True):
    method: str
    path: str
    ids: tuple[str, ...]  # its uuid path parameters

    def concrete(self, rows: dict[str, UUID], own: dict[str, UUID] | None = None, foreign: str = "") -> str:
        """The path with the ids of `rows`, or, given `own`, only `foreign` from `rows` and the others from `own`."""
        path = self.path.replace("{action:str}", "disable")  # a portal form's verb
        for name in self.ids:
            row = ROW_OF_ROUTE_PARAMETER.get((self.path, name), ROW_OF_PARAMETER.get(name, name))
            source = rows if own is None or name == foreign else own
            path = path.replace(f"{{{name}:uuid}}", str(source[row]))
        return path

    def attempts(self, theirs: dict[str, UUID], own: dict[str, UUID]) -> list[str]:
        """Every id of theirs, and, where a path has several, each of theirs among the caller's own."""
        mixed = [self.concrete(theirs, own, name) for name in self.ids] if len(self.ids) > 1 else []
        return [self.concrete(theirs), *mixed]


# The platform operator's routes act on any tenant by design; that every role but super_admin gets a 403 from
# each of them is tenants/test_platform_tenants.py's (and portal/test_platform_pages.py's) business.
PLATFORM_PREFIXES = ("/api/platform/", "/portal/platform/")


def id_routes(app: Litestar, prefix: str) -> list[IdRoute]:
    """Every (method, path) under `prefix` with a uuid in its path, from the app's route table (but the
    platform operator's)."""
    return sorted(
        (
            IdRoute(method, route.path, ids)
            for route in app.routes
            if isinstance(route, HTTPRoute)
            and route.path.startswith(prefix)
            and not route.path.startswith(PLATFORM_PREFIXES)
            for ids in [tuple(name for name, spec in route.path_parameters.items() if spec.type is UUID)]
            if ids
            for handler in route.route_handlers
            for method in sorted(handler.http_methods - {"HEAD", "OPTIONS"})
        ),
        key=lambda route: (route.path, route.method),
    )


def other_parameters(app: Litestar) -> set[str]:
    return {
        name
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for name, spec in route.path_parameters.items()
        if spec.type is not UUID
    }


async def rows_of(
    client: Client,
    upstream: MockUpstream,
    tenant: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> dict[str, UUID]:
    """One real row of the tenant for each kind of id, made as its admin would make it; the admin owns them all."""
    admin = auth_headers(tenant.admin)
    channel = await add_channel(client, admin, upstream, f"{tenant.slug}-channel")
    _, token = await issue_key(client, admin)
    conversation = await client.post(
        "/api/conversations", json={"model": "gpt-test", "use_memory": False}, headers=admin
    )
    assert conversation.status_code == 201, conversation.text
    attachment = await client.post(
        f"/api/conversations/{conversation.json()['id']}/attachments",
        files={"file": ("notes.txt", b"some notes", "text/plain")},
        headers=admin,
    )
    assert attachment.status_code == 201, attachment.text
    exports = {kind: await submit(client, admin, kind) for kind in ("usage.export", "memory.export")}
    invitation = await client.post(
        "/api/auth/invitations", json={"email": f"invitee@{tenant.slug}.example.com"}, headers=admin
    )
    assert invitation.status_code == 201, invitation.text
    async with tenant_session(session_maker, tenant.id) as session:
        # No API makes a link without a round trip to a provider: the row the isolation matrix uses.
        connection = ROW_FACTORIES["auth_oauth_connections"](tenant.id, tenant)
        assert isinstance(connection, OAuthConnection)
        # The gateway writes usage rows off the request path; one as it would, without a provider call.
        usage = UsageLog(user_id=tenant.admin.id, endpoint="chat", model="gpt-test", status_code=429, outcome="refused")
        session.add_all([connection, usage])
        await session.commit()
    return {
        "attachment": UUID(attachment.json()["id"]),
        "channel": UUID(channel["id"]),
        "conversation": UUID(conversation.json()["id"]),
        "group": tenant.group.id,
        "invitation": UUID(invitation.json()["id"]),
        "job": tenant.job.id,
        "kb_base": tenant.kb_base.id,
        "kb_document": tenant.kb_document.id,
        "memory": tenant.memory.id,
        "memory_export": UUID(exports["memory.export"]["id"]),
        "oauth_connection": connection.id,
        "oauth_provider": tenant.oauth_provider.id,
        "token": token_id_of(token),
        "usage": usage.id,
        "usage_export": UUID(exports["usage.export"]["id"]),
        "user": tenant.user.id,
        "webhook": tenant.webhook.id,
    }


@pytest.fixture
async def rows_of_a(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> dict[str, UUID]:
    return await rows_of(client, upstream, tenant_a, auth_headers, session_maker)


@pytest.fixture
async def rows_of_b(
    client: Client,
    upstream: MockUpstream,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> dict[str, UUID]:
    return await rows_of(client, upstream, tenant_b, auth_headers, session_maker)


async def stored(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, rows: dict[str, UUID]
) -> dict[str, dict[str, Any]]:
    """Every column of each row that the tenant's own session finds."""
    found = {}
    async with tenant_session(session_maker, tenant.id) as session:
        for name, row_id in rows.items():
            table = MODELS[name].__table__
            row = (await session.execute(select(table).where(table.c.id == row_id))).mappings().one_or_none()
            if row is not None:
                found[name] = dict(row)
    return found


def test_every_id_in_a_route_is_known(app: Litestar) -> None:
    routes = [route for prefix in ("/api/", "/portal/") for route in id_routes(app, prefix)]
    assert {"channel_id", "conversation_id", "job_id"} <= {name for route in routes for name in route.ids}
    unknown = {
        f"{route.method} {route.path}: {name}"
        for route in routes
        for name in route.ids
        if (route.path, name) not in ROW_OF_ROUTE_PARAMETER and name not in ROW_OF_PARAMETER
    }
    assert not unknown, "say in ROW_OF_PARAMETER which row of a tenant each of these ids names"
    assert other_parameters(app) <= set(NOT_ROW_IDS), "an id typed as a string? say in NOT_ROW_IDS why it is not"


async def test_another_tenants_admin_gets_404_from_every_api_route_with_an_id(
    client: Client,
    app: Litestar,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    rows_of_a: dict[str, UUID],
    rows_of_b: dict[str, UUID],
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    routes = id_routes(app, "/api/")
    assert len(routes) >= 30
    before = await stored(session_maker, tenant_a, rows_of_a)
    assert before.keys() == rows_of_a.keys()  # each row is A's, and A's own session reads it
    intruder = auth_headers(tenant_b.admin)
    for route in routes:
        for url in route.attempts(rows_of_a, rows_of_b):
            if (route.method, route.path) in UPLOADS:
                files = {"file": ("taken.txt", b"taken over", "text/plain")}
                response = await client.request(route.method, url, files=files, headers=intruder)
            else:
                body = BODIES.get((route.method, route.path))
                response = await client.request(route.method, url, json=body, headers=intruder)
            assert response.status_code == 404, (route.method, url, response.status_code, response.text)
    assert await stored(session_maker, tenant_a, rows_of_a) == before  # nothing of A's changed or went
    # A's admin reaches the same ids: the 404s above come from the tenant, not from the ids.
    owner = auth_headers(tenant_a.admin)
    for route in routes:
        if route.method == "GET":
            response = await client.get(route.concrete(rows_of_a), headers=owner, follow_redirects=False)
            assert response.status_code != 404, (route.path, response.text)


async def test_another_tenants_admin_gets_404_from_every_portal_page_and_form_with_an_id(
    client: Client,
    app: Litestar,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    rows_of_a: dict[str, UUID],
    rows_of_b: dict[str, UUID],
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    routes = id_routes(app, "/portal/")
    assert len(routes) >= 30
    before = await stored(session_maker, tenant_a, rows_of_a)
    token = await sign_in(client, tenant_b, tenant_b.admin.email)
    for route in routes:
        for url in route.attempts(rows_of_a, rows_of_b):
            if route.method == "GET":
                response = await client.get(url)
            else:
                response = await client.post(url, data={"csrf_token": token, **FORM_FIELDS})
            assert response.status_code == 404, (route.method, url, response.status_code)
    assert await stored(session_maker, tenant_a, rows_of_a) == before
    async with client_of(app) as owner:
        await sign_in(owner, tenant_a, tenant_a.admin.email)
        for route in routes:
            if route.method == "GET":
                response = await owner.get(route.concrete(rows_of_a))
                assert response.status_code != 404, route.path
