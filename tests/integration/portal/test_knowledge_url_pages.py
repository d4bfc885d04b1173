"""Knowledge documents from URLs in the portal: the Settings field of allowed hosts and the base page's URL form,
each refusal shown next to its field with nothing saved."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from app.settings import Settings
from db.session import tenant_session
from db.tenant import Organization
from tests.integration.portal.test_knowledge_pages import MARKDOWN, create_base, documents_of, ready_for_portal
from tests.support.clients import AuthHeaders, Client
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

HOSTS = "/portal/settings/knowledge-urls"


@pytest.fixture(scope="module")
async def app(session_settings: Settings) -> AsyncIterator[Litestar]:
    """This module's app: the loopback file server may be fetched from."""
    application = create_app(msgspec.structs.replace(session_settings, knowledge_url_allow_private=True))
    asgi: Any = application
    async with LifespanManager(asgi):
        yield application


@pytest.fixture
async def files() -> AsyncIterator[str]:
    async def handbook(request: web.Request) -> web.StreamResponse:
        return web.Response(body=MARKDOWN, content_type="text/markdown")

    application = web.Application()
    application.add_routes([web.get("/handbook.md", handbook)])
    runner = web.AppRunner(application)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://localhost:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def stored_hosts(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> Any:
    async with tenant_session(session_maker, tenant.id) as session:
        organization = await session.get_one(Organization, tenant.id)
        return (organization.settings or {}).get("knowledge_url_hosts")


async def test_the_hosts_field_refuses_bad_names_next_to_it_and_saves_good_ones(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    for typed, message in (
        ("docs.example.com\nnot a host", "'not a host' is not a host name"),
        ("*", "'*' is not a host name"),
        ("https://docs.example.com/", "is not a host name"),
        ("a" * 254, "253 characters"),
        ("\n".join(f"h{index}.example.com" for index in range(51)), "50"),
    ):
        refused = await client.post(HOSTS, data={"csrf_token": token, "knowledge_url_hosts": typed})
        assert refused.status_code == 400, typed
        shown = field_error(refused.text, "knowledge_url_hosts")
        assert shown is not None, refused.text
        assert message in html.unescape(shown), shown
        # What was typed stays in the field to correct.
        assert html.escape(typed.split("\n")[-1]) in refused.text
        assert await stored_hosts(session_maker, tenant_a) is None

    saved = await client.post(
        HOSTS, data={"csrf_token": token, "knowledge_url_hosts": "Docs.Example.com\n\n*.example.org\ndocs.example.com"}
    )
    assert saved.status_code == 303
    assert await stored_hosts(session_maker, tenant_a) == ["docs.example.com", "*.example.org"]
    page = await client.get("/portal/settings")
    assert "docs.example.com\n*.example.org</textarea>" in page.text
    # Emptied: adding by URL is off again.
    assert (await client.post(HOSTS, data={"csrf_token": token, "knowledge_url_hosts": ""})).status_code == 303
    assert await stored_hosts(session_maker, tenant_a) == []


async def test_an_end_user_does_not_reach_the_hosts_form(client: Client, tenant_a: TenantRows) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.post(HOSTS, data={"csrf_token": token, "knowledge_url_hosts": "docs.example.com"})
    assert response.status_code in (403, 404)


async def test_the_url_form_shows_its_refusal_next_to_the_field_and_adds_an_allowed_url(
    client: Client,
    files: str,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    admin_token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base_id = await create_base(client, admin_token)
    page = await client.get(f"/portal/knowledge/{base_id}")
    assert f'action="/portal/knowledge/{base_id}/documents/from-url"' in page.text
    action = f"/portal/knowledge/{base_id}/documents/from-url"

    off = await client.post(action, data={"csrf_token": admin_token, "url": f"{files}/handbook.md"})
    assert off.status_code == 403
    assert "takes no documents from URLs" in (field_error(off.text, "url") or "")
    assert (
        await client.post(HOSTS, data={"csrf_token": admin_token, "knowledge_url_hosts": "localhost"})
    ).status_code == 303

    for url, status, message in (
        ("", 400, "required"),
        ("https://elsewhere.example.net/a.md", 403, "elsewhere.example.net is not one your organization allows"),
        ("file:///etc/passwd", 400, "only http:// and https://"),
        (f"{files}/missing.md", 400, "HTTP status 404"),
    ):
        refused = await client.post(action, data={"csrf_token": admin_token, "url": url})
        assert refused.status_code == status, (url, refused.text)
        assert message in html.unescape(field_error(refused.text, "url") or ""), refused.text
        assert f'value="{html.escape(url)}"' in refused.text
    assert await documents_of(session_maker, tenant_a, base_id) == []

    added = await client.post(action, data={"csrf_token": admin_token, "url": f"{files}/handbook.md"})
    assert added.status_code == 303, added.text
    listed = await client.get(added.headers["location"])
    assert "The document is uploaded and queued for ingestion." in listed.text
    assert "handbook" in listed.text
    [document] = await documents_of(session_maker, tenant_a, base_id)
    assert (document.filename, document.source_url) == ("handbook.md", f"{files}/handbook.md")
