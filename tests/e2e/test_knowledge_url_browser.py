"""Knowledge documents from URLs in a real browser: an administrator lists the allowed hosts in Settings (a bad
one refused next to the field first), then adds a document to a base by its URL (a host not allowed refused
next to the field first) and sees it listed; the Settings section and the base page photographed at 1280 and
390 px."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from db.bootstrap import DatabaseUrls
from tests.e2e.test_knowledge_browser import HANDBOOK, add_embeddings_channel
from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def lyss(database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLyss]:
    """`lyss serve` that may fetch from loopback addresses, where this test's file server is."""
    with serve_lyss(
        database, redis_url, tmp_path_factory.mktemp("lyss-url"), LYSS_KNOWLEDGE_URL_ALLOW_PRIVATE="true"
    ) as running:
        yield running


@pytest.fixture
async def files() -> AsyncIterator[str]:
    async def handbook(request: web.Request) -> web.StreamResponse:
        return web.Response(text=HANDBOOK, content_type="text/markdown")

    application = web.Application()
    application.add_routes([web.get("/guides/office-handbook.md", handbook)])
    runner = web.AppRunner(application)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://localhost:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_an_administrator_allows_a_host_and_adds_a_document_by_its_url(
    lyss: RunningLyss, browser: Browser, files: str, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await add_embeddings_channel(page, lyss.url, upstream)

    await page.goto(f"{lyss.url}/portal/settings#knowledge-urls")
    hosts = page.locator("#knowledge_url_hosts")
    await hosts.fill("localhost\nhttps://docs.example.com/")
    await page.click("#knowledge-urls button[type=submit]")
    await expect(page.locator("#knowledge_url_hosts-error")).to_contain_text("is not a host name")
    await expect(hosts).to_have_value("localhost\nhttps://docs.example.com/")
    await hosts.fill("localhost\n*.example.com")
    await page.click("#knowledge-urls button[type=submit]")
    await expect(page.locator(".notice.ok")).to_contain_text("The hosts knowledge documents may be fetched from")
    await expect(hosts).to_have_value("localhost\n*.example.com")
    await shoot_both_widths(page, "knowledge-url-settings")

    await page.goto(f"{lyss.url}/portal/knowledge")
    await page.fill("#name", "Guides")
    await page.click("#new-base button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Guides")

    url = page.locator("#url")
    await url.fill(f"{files.replace('localhost', '127.0.0.1')}/guides/office-handbook.md")
    await page.click("#url-form button[type=submit]")
    await expect(page.locator("#url-error")).to_contain_text("127.0.0.1 is not one your organization allows")
    await expect(page.locator("#documents-live")).to_contain_text("No documents yet.")
    await url.fill(f"{files}/guides/office-handbook.md")
    await page.click("#url-form button[type=submit]")
    await expect(page.locator(".notice.ok")).to_contain_text("The document is uploaded and queued for ingestion.")
    documents = page.locator("#documents-table tbody tr")
    await expect(documents).to_have_count(1)
    await expect(documents.nth(0)).to_contain_text(re.compile(r"office-?\s*handbook"))
    await expect(documents.nth(0)).to_contain_text("queued")
    await shoot_both_widths(page, "knowledge-url-form")
    await context.close()
