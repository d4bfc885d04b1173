"""Knowledge bases in a real browser: an end user creates a base (a refusal next to its field first), uploads a
Markdown file through the file input and another by dropping it on the zone (a duplicate and a type not taken
said under their names), opens a document's passages and deletes it and the base through their confirmation
pages; the list, the base and the document are photographed at 1280 and 390 px."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from uuid import UUID

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.knowledge import KnowledgeChunk, KnowledgeDocument
from db.session import tenant_session
from tests.support.browser import WIDE, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EMBEDDER = "text-embedding-e2e"
HANDBOOK = "# Office handbook\n\nThe office opens at nine and closes at five.\n\n## Parking\n\nParking is free.\n"
PASSAGES = [
    ("Office handbook", "The office opens at nine and closes at five."),
    ("Office handbook > Parking", "Parking is free."),
]

# A file dropped on the zone as a person drags one from their desktop: a `drop` event carrying it.
DROP = """([name, content]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([content], name, { type: "text/markdown" }));
  return transfer;
}"""


async def drop_file(page: Page, name: str, content: str) -> None:
    transfer = await page.evaluate_handle(DROP, [name, content])
    await page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    await page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


async def add_embeddings_channel(page: Page, url: str, upstream: MockUpstream) -> None:
    await page.goto(f"{url}/portal/channels/new")
    await page.select_option("#type", "openai")
    await page.fill("#name", "Embedder")
    await page.fill("#base_url", upstream.base_url("kb-e2e"))
    await page.fill("#keys", "sk-upstream-test")
    await page.fill("#models", EMBEDDER)
    await page.click("main button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/portal/channels$"))


async def ingested(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, filename: str) -> UUID:
    """What the ingestion job writes (the passages, the document ready), written here so that this test of the
    pages needs no worker; test_knowledge_journey_browser.py runs the real job."""
    async with tenant_session(session_maker, tenant.id) as session:
        # The user's upload, not the fixture's document of the same name.
        document = await session.scalar(
            select(KnowledgeDocument).where(
                KnowledgeDocument.filename == filename, KnowledgeDocument.created_by == tenant.user.id
            )
        )
        assert document is not None
        for position, (section, passage) in enumerate(PASSAGES):
            session.add(
                KnowledgeChunk(
                    base_id=document.base_id,
                    document_id=document.id,
                    level="passage",
                    position=position,
                    section=section,
                    start_offset=HANDBOOK.index(passage),
                    end_offset=HANDBOOK.index(passage) + len(passage),
                    text=passage,
                    token_count=len(passage.split()),
                    content_hash=hashlib.sha256(passage.encode()).hexdigest(),
                    language=text("'english'::regconfig"),
                )
            )
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == document.id)
            .values(status="ready", chunk_count=len(PASSAGES), embedding_model=EMBEDDER)
        )
        await session.commit()
        return document.id


async def failed(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, filename: str) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.filename == filename, KnowledgeDocument.created_by == tenant.user.id)
            .values(status="failed", error="No text found: the file has headings but no paragraphs to index.")
        )
        await session.commit()


async def test_an_end_user_builds_a_knowledge_base_by_dropping_files_and_deletes_it(
    lyss: RunningLyss,
    browser: Browser,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    admin_context = await browser.new_context(viewport=WIDE)
    admin_page = await admin_context.new_page()
    await sign_in(admin_page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(admin_page.locator("h1")).to_have_text("Organization usage")
    await add_embeddings_channel(admin_page, lyss.url, upstream)
    await admin_context.close()

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await open_from_menu(page, "Knowledge")
    await expect(page.locator("h1")).to_have_text("Knowledge bases")
    await expect(page.locator("#scope option")).to_have_text(["Mine"])

    await page.fill("#name", "Team notes")
    await page.fill("#chunk_overlap", "300")
    await page.click("#new-base button[type=submit]")
    await expect(page.locator("#chunk_overlap-error")).to_contain_text("at most half")
    await expect(page.locator("#name")).to_have_value("Team notes")
    await page.fill("#chunk_overlap", "60")
    await page.click("#new-base button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Team notes")
    await expect(page.locator(".notice.ok")).to_contain_text("The knowledge base is created.")
    await expect(page.locator("#documents-live")).to_contain_text("No documents yet.")

    # The file input (JavaScript uploads the chosen file at once, with a progress bar).
    handbook = tmp_path / "handbook.md"
    handbook.write_text(HANDBOOK)
    # The page's script has taken the form over (it hides the button) before a file is chosen: the heading
    # shows while the page is still loading, and a file chosen then would go nowhere.
    await expect(page.locator("#upload-button")).to_be_hidden()
    await page.set_input_files("#file", handbook)
    uploads = page.locator("#upload-list li")
    await expect(uploads.nth(0)).to_contain_text("The document is uploaded and queued for ingestion.")
    documents = page.locator("#documents-table tbody tr")
    await expect(documents).to_have_count(1)
    await expect(documents.nth(0)).to_contain_text("queued")
    await expect(page.locator("#ingesting-hint")).to_be_visible()

    # Dropped on the zone: a new file, the same content again, a type not taken.
    await drop_file(page, "notes.md", "# Notes\n\nBring your badge.\n")
    await expect(uploads.nth(1)).to_contain_text("uploaded and queued")
    await drop_file(page, "copy of handbook.md", HANDBOOK)
    await expect(uploads.nth(2)).to_contain_text("already in this base")
    await drop_file(page, "tool.exe", "MZ")
    await expect(uploads.nth(3)).to_contain_text("not taken")
    await expect(documents).to_have_count(2)

    document_id = await ingested(session_maker, tenant_a, "handbook.md")
    await failed(session_maker, tenant_a, "notes.md")
    # The list refreshes itself while documents are queued; once none is, it stops asking.
    await expect(page.locator("#documents-table")).to_contain_text("ready")
    await expect(page.locator("#documents-table")).to_contain_text("No text found")
    await expect(page.locator("#ingesting-hint")).to_have_count(0)
    await shoot_both_widths(page, "knowledge-base")

    await page.goto(f"{lyss.url}/portal/knowledge")
    row = page.locator("#bases-table tr", has_text="Team notes")
    await expect(row).to_contain_text("Personal")
    await expect(row.locator("td.num")).to_have_text("2")
    await shoot_both_widths(page, "knowledge-list")

    await row.locator("a").click()
    await page.locator("#documents-table a", has_text="handbook").click()
    await expect(page).to_have_url(re.compile(rf"/documents/{document_id}$"))
    await expect(page.locator("#chunks blockquote")).to_have_text([passage for _, passage in PASSAGES])
    await expect(page.locator("#chunks")).to_contain_text("Office handbook > Parking")
    await shoot_both_widths(page, "knowledge-document")

    await page.click("text=Delete this document…")
    await expect(page.locator("h1")).to_contain_text("Delete handbook")
    await page.click("#confirm-delete button[type=submit]")
    await expect(page.locator(".notice.ok")).to_contain_text("The document is deleted")
    await expect(documents).to_have_count(1)

    await page.click("text=Delete this knowledge base…")
    await expect(page.locator("#confirm-delete")).to_contain_text("its 1 document,")
    await page.click("#confirm-delete button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/portal/knowledge$"))
    await expect(page.locator(".notice.ok")).to_contain_text("The knowledge base is deleted")
    await expect(page.locator("#bases-table")).not_to_contain_text("Team notes")
    await context.close()
