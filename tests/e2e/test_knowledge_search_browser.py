"""A knowledge base's search box in a real browser: a reader searches, sees the passage with its words marked,
and follows the result to the passage on its document's page (past the preview of 20); a refusal is said next
to the box. The results and the landed passage are photographed at 1280 and 390 px."""

from __future__ import annotations

import hashlib
import re
from uuid import UUID

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from db.knowledge import KnowledgeChunk, KnowledgeDocument
from db.session import tenant_session
from tests.support.browser import WIDE, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream, word_vector
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EMBEDDER = "text-embedding-search-e2e"
CHANNEL = "kb-search-e2e"
DIMENSIONS = 256
FIRE = "In case of fire, leave by the stairs behind the kitchen and gather in the car park."
RULES = [f"Rule {number}: keep the shared desks tidy for the next colleague." for number in range(1, 24)]


async def ready_document(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, base_id: UUID, passages: list[str]
) -> tuple[UUID, list[UUID]]:
    """A document as ingestion leaves it, its passages embedded with the mock provider's word vectors (what the
    gateway answers for the query through the same provider)."""
    document_id = uuid7()
    body = "\n".join(passages)
    async with tenant_session(session_maker, tenant.id) as session:
        session.add(
            KnowledgeDocument(
                id=document_id,
                base_id=base_id,
                filename="safety-rules.txt",
                content_type="text/plain",
                size_bytes=len(body),
                content_hash=hashlib.sha256(body.encode()).hexdigest(),
                object_key=f"kb/{base_id}/{document_id}/safety-rules.txt",
                status="ready",
                chunk_count=len(passages),
                embedding_model=EMBEDDER,
            )
        )
        await session.flush()
        ids, offset = [], 0
        for position, text in enumerate(passages):
            vector = word_vector(text, DIMENSIONS)
            passage = KnowledgeChunk(
                id=uuid7(),
                base_id=base_id,
                document_id=document_id,
                level="passage",
                position=position,
                page=1,
                section="Safety",
                start_offset=offset,
                end_offset=offset + len(text),
                text=text,
                token_count=len(text) // 4,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                embedding=vector,
                embedding_dim=DIMENSIONS,
                embedding_model=EMBEDDER,
                language="english",
            )
            session.add(passage)
            ids.append(passage.id)
            offset += len(text) + 1
        await session.commit()
    return document_id, ids


async def test_a_reader_searches_a_base_and_lands_on_the_passage(
    lyss: RunningLyss,
    browser: Browser,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    upstream.behave(CHANNEL, dimensions=DIMENSIONS)
    admin_context = await browser.new_context(viewport=WIDE)
    admin_page = await admin_context.new_page()
    await sign_in(admin_page, lyss.url, tenant_a, tenant_a.admin.email)
    await admin_page.goto(f"{lyss.url}/portal/channels/new")
    await admin_page.select_option("#type", "openai")
    await admin_page.fill("#name", "Embedder")
    await admin_page.fill("#base_url", upstream.base_url(CHANNEL))
    await admin_page.fill("#keys", "sk-upstream-test")
    await admin_page.fill("#models", EMBEDDER)
    await admin_page.click("main button[type=submit]")
    await expect(admin_page).to_have_url(re.compile(r"/portal/channels$"))
    await admin_context.close()

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await open_from_menu(page, "Knowledge")
    await page.fill("#name", "Office")
    await page.click("#new-base button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Office")
    found = re.search(r"/portal/knowledge/([0-9a-f-]{36})", page.url)
    assert found
    document_id, passage_ids = await ready_document(session_maker, tenant_a, UUID(found[1]), [*RULES, FIRE])
    fire_id = passage_ids[-1]
    await page.reload()
    await expect(page.locator("#rerank-unavailable")).to_be_visible()

    # Nothing typed: said next to the box, the documents still listed.
    await page.click("#search button[type=submit]")
    await expect(page.locator("#q-error")).to_have_text("This field is required.")
    await expect(page.locator("#documents-table tbody tr")).to_have_count(1)

    await page.fill("#q", "fire stairs kitchen")
    await page.click("#search button[type=submit]")
    results = page.locator("#search-results > li")
    await expect(results.first).to_contain_text("safety-rules.txt")
    await expect(results.first.locator("mark")).to_have_text(["fire", "stairs", "kitchen"])
    await expect(results.first).to_contain_text("page 1 · Safety · score")
    await expect(page.locator("#q")).to_have_value("fire stairs kitchen")
    await shoot_both_widths(page, "knowledge-search")

    await results.first.locator("a").click()
    await expect(page).to_have_url(re.compile(rf"/documents/{document_id}\?chunk={fire_id}#chunk-{fire_id}$"))
    landed = page.locator(f"#chunk-{fire_id}")
    await expect(landed).to_contain_text(FIRE)
    await expect(landed).to_be_in_viewport()
    assert await page.evaluate("document.querySelector(':target').id") == f"chunk-{fire_id}"
    await expect(page.locator("#chunks > li")).to_have_count(20)
    await shoot_both_widths(page, "knowledge-search-passage")
    await context.close()
