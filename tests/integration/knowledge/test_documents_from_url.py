"""Documents added from a URL: fetched from a loopback server over real HTTP, then stored as an upload is; every
refusal (host, scheme, credentials, redirects, size, status, time) names `url` and stores nothing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from litestar import Litestar
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import InvalidRequest
from app.knowledge.fetch import MAX_REDIRECTS, checked_addresses, host_allowed, is_public_address
from app.main import create_app
from app.settings import Settings
from db.knowledge import KnowledgeDocument
from db.session import tenant_session
from tests.integration.knowledge.test_ingestion import (
    EMBEDDER,
    TERMINAL,
    assert_well_formed,
    chunks_of,
    markdown,
    pdf_document,
    setup_base,
    upload,
    wait_for_document,
)
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows, audit_actions

BASES = "/api/knowledge-bases"
POLICY = "/api/tenant/policy"
MAX_BYTES = 64 * 1024
HANDBOOK = markdown(40)
PARKING = pdf_document()


@pytest.fixture(scope="module")
async def app(session_settings: Settings) -> AsyncIterator[Litestar]:
    """This module's app: loopback addresses may be fetched (the test server is on one), with short timeouts
    and a small upload limit."""
    settings = msgspec.structs.replace(
        session_settings,
        knowledge_url_allow_private=True,
        knowledge_url_connect_timeout_seconds=1.0,
        knowledge_url_timeout_seconds=1.5,
        kb_max_upload_bytes=MAX_BYTES,
    )
    application = create_app(settings)
    asgi: Any = application
    async with LifespanManager(asgi):
        yield application


async def _slow(request: web.Request) -> web.StreamResponse:
    # Past the fetch's timeout (1.5 s, counted from before the request was sent), and no longer: the file
    # server's clean-up waits for this handler.
    await asyncio.sleep(3)
    return web.Response(text="too late")


async def _endless(request: web.Request) -> web.StreamResponse:
    # No Content-Length: only reading the stream shows how large it is.
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for _ in range(100):
        await response.write(b"a" * 8192)
    return response


def _files() -> web.Application:
    def redirect(to: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(to)

        return handler

    async def away(request: web.Request) -> web.StreamResponse:
        # The same server under another name: a host the tenant does not allow.
        raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/docs/handbook.md")

    async def hops(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/hops/{int(request.match_info['count']) + 1}")

    async def handbook(request: web.Request) -> web.StreamResponse:
        return web.Response(body=HANDBOOK, content_type="text/markdown")

    async def parking(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=PARKING,
            content_type="application/pdf",
            headers={"Content-Disposition": 'attachment; filename="parking rules.pdf"'},
        )

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"a" * (MAX_BYTES + 1), content_type="text/plain")

    async def program(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"MZ\x90\x00", content_type="application/x-dos")

    application = web.Application()
    application.add_routes(
        [
            web.get("/docs/handbook.md", handbook),
            web.get("/download", parking),
            web.get("/moved", redirect("/docs/handbook.md")),
            web.get("/away", away),
            web.get("/hops/{count}", hops),
            web.get("/big.txt", big),
            web.get("/endless.txt", _endless),
            web.get("/slow.md", _slow),
            web.get("/tool.exe", program),
        ]
    )
    return application


@pytest.fixture
async def files() -> AsyncIterator[str]:
    """A loopback file server, by name (`localhost`): the one name the tests' tenant allows."""
    runner = web.AppRunner(_files())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://localhost:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def allow(client: Client, admin: dict[str, str], hosts: list[str]) -> None:
    response = await client.patch(POLICY, json={"knowledge_url_hosts": hosts}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["knowledge_url_hosts"] == [host.lower() for host in hosts]


async def from_url(client: Client, headers: dict[str, str], base_id: str, url: str, **body: Any) -> Any:
    return await client.post(f"{BASES}/{base_id}/documents/from-url", json={"url": url, **body}, headers=headers)


async def stored_documents(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, base_id: str) -> int:
    async with tenant_session(session_maker, tenant.id) as session:
        return int(await session.scalar(select(func.count()).where(KnowledgeDocument.base_id == UUID(base_id))) or 0)


async def test_a_markdown_and_a_pdf_by_url_become_documents_as_uploads_do(
    client: Client,
    files: str,
    session_settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    await allow(client, admin, ["LOCALHOST", "*.example.com"])

    markdown_url = f"{files}/moved"
    added = await from_url(client, user, base["id"], markdown_url, metadata={"team": "ops"})
    assert added.status_code == 201, added.text
    handbook = added.json()
    # Named from the final URL's path after the redirect; the URL asked for is kept.
    assert (handbook["filename"], handbook["content_type"], handbook["source_url"]) == (
        "handbook.md",
        "text/markdown",
        markdown_url,
    )
    assert (handbook["status"], handbook["metadata"], handbook["duplicate"]) == ("queued", {"team": "ops"}, False)
    assert handbook["content_hash"] == hashlib.sha256(HANDBOOK).hexdigest()
    pdf = await from_url(client, user, base["id"], f"{files}/download")
    assert pdf.status_code == 201, pdf.text
    parking = pdf.json()
    assert (parking["filename"], parking["content_type"], parking["size_bytes"]) == (
        "parking rules.pdf",
        "application/pdf",
        len(PARKING),
    )

    # The same URL again, and the same content as a file: that document, nothing stored twice.
    again = await from_url(client, user, base["id"], markdown_url)
    assert (again.status_code, again.json()["id"], again.json()["duplicate"]) == (200, handbook["id"], True)
    as_file = await upload(client, user, base["id"], "copy.md", HANDBOOK)
    assert (as_file.status_code, as_file.json()["id"]) == (200, handbook["id"])
    assert await stored_documents(session_maker, tenant_a, base["id"]) == 2

    async with running_worker(session_settings):
        done = [await wait_for_document(client, user, document, TERMINAL) for document in (handbook, parking)]
    for document in done:
        assert (document["status"], document["error"], document["embedding_model"]) == ("ready", None, EMBEDDER)
        assert_well_formed(await chunks_of(session_maker, tenant_a, document["id"]), document, EMBEDDER, 64)
    assert done[1]["pages"] == 2
    actions = await audit_actions(session_maker, tenant_a.id)
    assert actions.count("knowledge.document_added") == 2


async def test_every_refused_url_names_the_field_and_stores_nothing(
    client: Client,
    files: str,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    session_settings: Settings,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    port = files.rsplit(":", 1)[1]

    # No host allowed yet: URLs are off.
    off = await from_url(client, user, base["id"], f"{files}/docs/handbook.md")
    assert off.status_code == 403
    assert off.json()["detail"].startswith("`url`: your organization takes no documents from URLs")
    await allow(client, admin, ["localhost"])

    refusals = [
        (f"http://127.0.0.1:{port}/docs/handbook.md", 403, "not one your organization allows"),
        (f"{files}/away", 403, "not one your organization allows"),
        (f"{files}/hops/0", 400, f"more than {MAX_REDIRECTS} redirects"),
        (f"ftp://localhost:{port}/docs/handbook.md", 400, "only http:// and https://"),
        ("file:///etc/passwd", 400, "only http:// and https://"),
        (f"http://reader:secret@localhost:{port}/docs/handbook.md", 400, "user name or password"),
        (f"http://localhost@localhost:{port}/docs/handbook.md", 400, "user name or password"),
        (f"{files}/missing.md", 400, "HTTP status 404"),
        (f"{files}/big.txt", 413, f"larger than the {MAX_BYTES} bytes"),
        (f"{files}/endless.txt", 413, f"larger than the {MAX_BYTES} bytes"),
        (f"{files}/slow.md", 400, "did not answer in time"),
        (f"{files}/tool.exe", 415, "'.exe' are not taken"),
        ("http://localhost:1/docs/handbook.md", 400, "could not be reached"),
        ("not a url at all", 400, "only http:// and https://"),
    ]
    for url, status, message in refusals:
        response = await from_url(client, user, base["id"], url)
        assert response.status_code == status, (url, response.text)
        detail = response.json()["detail"]
        assert detail.startswith("`url`"), (url, detail)
        assert message in detail, (url, detail)
        # Nothing of the URL's credentials is shown back.
        assert "secret" not in detail
    for body, field in (
        ({"url": ""}, "url"),
        ({"url": "x" * 2001}, "url"),
        ({"url": 5}, "url"),
        ({}, "url"),
        ({"url": f"{files}/docs/handbook.md", "metadata": [1]}, "metadata"),
        ({"url": f"{files}/docs/handbook.md", "metadata": {"big": "x" * 17000}}, "metadata"),
        ({"url": f"{files}/docs/handbook.md", "color": "red"}, "color"),
    ):
        response = await client.post(f"{BASES}/{base['id']}/documents/from-url", json=body, headers=user)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)

    assert await stored_documents(session_maker, tenant_a, base["id"]) == 0
    assert not (session_settings.storage_path / "tenants" / str(tenant_a.id) / "kb").exists()
    assert "knowledge.document_added" not in await audit_actions(session_maker, tenant_a.id)


async def test_a_reader_of_the_base_may_not_add_from_a_url(
    client: Client,
    files: str,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await setup_base(client, upstream, admin, user)
    shared = await client.post(
        BASES, json={"name": "Everyone", "embedding_model": EMBEDDER, "scope": "tenant"}, headers=admin
    )
    await allow(client, admin, ["localhost"])
    refused = await from_url(client, user, shared.json()["id"], f"{files}/docs/handbook.md")
    assert refused.status_code == 403, refused.text
    other_tenant = await from_url(
        client, auth_headers(tenant_b.admin), shared.json()["id"], f"{files}/docs/handbook.md"
    )
    assert other_tenant.status_code == 404
    assert await stored_documents(session_maker, tenant_a, shared.json()["id"]) == 0


async def test_the_allowed_hosts_are_checked_by_field(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    for hosts in (
        ["bad host"],
        ["*.com.*"],
        ["*"],
        ["-dash.example.com"],
        ["http://docs.example.com"],
        ["a" * 64 + ".example.com"],
        ["x" * 254],
        ["docs.example.com"] * 51,
        "docs.example.com",
        [""],
    ):
        response = await client.patch(POLICY, json={"knowledge_url_hosts": hosts}, headers=admin)
        assert response.status_code == 400, (hosts, response.text)
        assert "knowledge_url_hosts" in response.text, (hosts, response.text)
    assert (await client.get(POLICY, headers=admin)).json()["knowledge_url_hosts"] == []
    await allow(client, admin, ["docs.example.com", "*.example.org"])
    user = auth_headers(tenant_a.user)
    assert (await client.patch(POLICY, json={"knowledge_url_hosts": []}, headers=user)).status_code == 403


def test_hosts_match_exactly_or_under_a_wildcard() -> None:
    allowed = ["docs.example.com", "*.example.org"]
    assert host_allowed("DOCS.example.com.", allowed)
    assert host_allowed("a.b.example.org", allowed)
    assert not host_allowed("example.org", allowed)
    assert not host_allowed("evil-example.org", allowed)
    assert not host_allowed("docs.example.com.evil.net", allowed)
    assert not host_allowed("other.example.com", allowed)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address refused, nothing bound
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(ip_address(address))


async def test_a_name_that_resolves_to_a_private_address_is_refused_unless_the_operator_allows_it() -> None:
    with pytest.raises(InvalidRequest) as refused:
        await checked_addresses("localhost", 80, allow_private=False)
    assert refused.value.field == "url"
    assert "private or reserved" in str(refused.value)
    for literal in ("127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"):
        with pytest.raises(InvalidRequest, match="private or reserved"):
            await checked_addresses(literal, 80, allow_private=False)
    assert "127.0.0.1" in await checked_addresses("localhost", 80, allow_private=True)


async def test_a_slow_url_holds_no_database_transaction_while_it_is_fetched(
    client: Client,
    files: str,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    postgres_superuser_url: str,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    await allow(client, admin, ["localhost"])
    # As the superuser: only it sees the state of every role's sessions in pg_stat_activity.
    watcher = await asyncpg.connect(postgres_superuser_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        fetch = asyncio.create_task(from_url(client, user, base["id"], f"{files}/slow.md"))
        await asyncio.sleep(0.8)  # the fetch waits on the server, which answers after its timeout of 1.5 s
        assert not fetch.done()
        open_transactions = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'lyss_app' AND state LIKE 'idle in transaction%'"
        )
        response = await fetch
    finally:
        await watcher.close()
    assert response.status_code == 400
    assert open_transactions == 0
