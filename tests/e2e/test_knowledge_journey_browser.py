"""The knowledge journey in a real browser, nothing written behind the portal's back: an end user creates a base,
drops a PDF, a Word document and a Markdown file on it, the real ingestion job (the server's embedded worker,
the mock provider embedding) brings each to `ready`, the base's search box finds the passage, and a chat
answer cites it with a link that lands on it.

Saves `knowledge-journey-*.png` (1280 and 390 px wide) into docs/screenshots/.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import docx
import httpx
import pytest
from fpdf import FPDF
from playwright.async_api import Browser, expect

from db.bootstrap import DatabaseUrls
from tests.support.browser import WIDE, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EMBEDDER = "text-embedding-journey"
CHAT_MODEL = "gpt-journey"
BICYCLES = "Bicycles are parked free of charge in the basement garage behind the loading dock."
TRAINS = "Trains are booked before planes for any trip under five hundred kilometres."
BADGE = "New colleagues collect their badge at the reception desk at half past eight."
ANSWER = "Park your bicycle in the basement garage, free of charge [1]."


def pdf_file() -> bytes:
    """Two pages; the bicycles on the second, so that the page a citation names is not simply the first."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, "Facilities guide. The canteen serves lunch from noon until two in the afternoon.")
    pdf.add_page()
    pdf.multi_cell(0, 10, BICYCLES)
    return bytes(pdf.output())


def word_file() -> bytes:
    document = docx.Document()
    document.add_heading("Travel policy", level=1)
    document.add_paragraph(TRAINS)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


MARKDOWN = f"# Onboarding\n\n## First day\n\n{BADGE}\n"


@pytest.fixture
def lyss_with_worker(database: DatabaseUrls, redis_url: str, tmp_path: Path) -> Iterator[RunningLyss]:
    """`lyss serve` with its embedded job worker, which runs the ingestion jobs the uploads queue."""
    with serve_lyss(database, redis_url, tmp_path, LYSS_EMBEDDED_WORKER="true") as running:
        yield running


async def test_files_dropped_on_a_base_are_ingested_found_and_cited_in_a_chat_answer(
    lyss_with_worker: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream, tmp_path: Path
) -> None:
    lyss = lyss_with_worker
    upstream.behave("journey-embed", dimensions=256)
    upstream.behave("journey-chat", replies=[ANSWER])
    admin = lyss.headers_for(tenant_a.admin)
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        for name, model in (("journey-embed", EMBEDDER), ("journey-chat", CHAT_MODEL)):
            channel = await api.post(
                "/api/channels",
                json={
                    "name": name,
                    "type": "openai-compatible",
                    "models": [model],
                    "keys": ["sk-upstream-test"],
                    "base_url": upstream.base_url(name),
                },
                headers=admin,
            )
            assert channel.status_code == 201, channel.text

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await open_from_menu(page, "Knowledge")
    await page.fill("#name", "Company handbook")
    await page.select_option("#embedding_model", EMBEDDER)
    await page.click("#new-base button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Company handbook")
    found = re.search(r"/portal/knowledge/([0-9a-f-]{36})", page.url)
    assert found
    base_id = found[1]

    files = {"facilities.pdf": pdf_file(), "travel.docx": word_file(), "onboarding.md": MARKDOWN.encode()}
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        paths.append(path)
    await expect(page.locator("#upload-button")).to_be_hidden()  # the page's script has taken the form over
    await page.set_input_files("#file", paths)
    await expect(page.locator("#upload-list li")).to_have_count(3)
    for row in await page.locator("#upload-list li").all():
        await expect(row).to_contain_text("uploaded and queued", timeout=15_000)

    # The list refreshes itself until no document is waiting; the worker has ingested all three by then.
    documents = page.locator("#documents-table tbody tr")
    await expect(documents).to_have_count(3)
    await expect(page.locator("#ingesting-hint")).to_have_count(0, timeout=60_000)
    for name in files:
        row = documents.filter(has_text=name)
        await expect(row).to_contain_text("ready")
        # Each has passages; the count is the ingestion's, not a fixture's.
        assert int((await row.locator("td.num").nth(1).inner_text()).strip()) >= 1
    await shoot_both_widths(page, "knowledge-journey-ready")

    await page.fill("#q", "where do bicycles park")
    await page.click("#search button[type=submit]")
    results = page.locator("#search-results > li")
    await expect(results.first).to_contain_text("facilities.pdf")
    await expect(results.first).to_contain_text("page 2")
    await expect(results.first).to_contain_text("basement garage behind the loading dock")
    await shoot_both_widths(page, "knowledge-journey-search")
    await page.fill("#q", "booking trains or planes for a trip")
    await page.click("#search button[type=submit]")
    await expect(results.first).to_contain_text("travel.docx")
    await expect(results.first).to_contain_text(TRAINS)

    await open_from_menu(page, "Chat")
    await page.fill("#title", "Getting to work")
    await page.select_option("#model", CHAT_MODEL)
    await page.click("main button:text('Start')")
    await expect(page.locator("h1")).to_have_text("Getting to work")
    await page.click("details.chat-settings > summary")
    await page.get_by_label("Company handbook").check()
    await page.click("details.chat-settings button:text('Save settings')")
    await expect(page.locator("h1")).to_have_text("Getting to work")

    await page.fill("#message", "Where can I park my bicycle?")
    await page.keyboard.press("Enter")
    answer = page.locator("#transcript .msg.assistant").last
    await expect(answer.locator(".md")).to_contain_text("basement garage, free of charge [1]")
    sources = answer.locator("ol.citations a")
    await expect(sources.first).to_have_text(re.compile(r"^facilities\.pdf, page 2"))
    # The provider was given the passage as source [1], from the ingested PDF.
    system = next(body for name, body in reversed(upstream.bodies) if name == "journey-chat")["messages"][0]
    assert system["role"] == "system"
    assert re.search(
        r"\[1\] facilities\.pdf, page 2[^\n]*\n[^\n]*basement garage behind the loading dock", system["content"]
    )
    await shoot_both_widths(page, "knowledge-journey-chat")

    href = await sources.first.get_attribute("href")
    assert href is not None
    assert href.startswith(f"/portal/knowledge/{base_id}/documents/")
    await sources.first.click()
    chunk_id = href.rsplit("#chunk-", 1)[1]
    landed = page.locator(f"#chunk-{chunk_id}")
    await expect(landed).to_contain_text("basement garage behind the loading dock")
    await expect(landed).to_be_in_viewport()
    await context.close()
