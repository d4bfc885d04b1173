"""Chat with knowledge in a real browser: an end user attaches a knowledge base in a conversation's settings, asks,
and finds the answer's sources listed under it as links to the passages, on a wide and a phone screen."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.knowledge.test_knowledge_bases import EMBEDDER
from tests.integration.knowledge.test_search import HOLIDAYS, OPENS, PARKING, SICK, add_document
from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ANSWER = "The office opens at nine [1]; holidays are booked in the portal [2]."


async def test_an_end_user_attaches_a_base_asks_and_sees_the_sources(
    lyss: RunningLyss,
    browser: Browser,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    upstream.behave("kb-chat-e2e", replies=[ANSWER])
    upstream.behave("kb-embed-e2e", dimensions=256)
    admin, user = lyss.headers_for(tenant_a.admin), lyss.headers_for(tenant_a.user)
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        for name, models in (("kb-chat-e2e", ["gpt-chat"]), ("kb-embed-e2e", [EMBEDDER])):
            channel = await api.post(
                "/api/channels",
                json={
                    "name": name,
                    "type": "openai-compatible",
                    "models": models,
                    "keys": ["sk-upstream-test"],
                    "base_url": upstream.base_url(name),
                },
                headers=admin,
            )
            assert channel.status_code == 201, channel.text
        issued = await api.post("/api/tokens", json={"name": "ingest"}, headers=admin)
        assert issued.status_code == 201, issued.text
        key = issued.json()["key"]
        base = await api.post(
            "/api/knowledge-bases", json={"name": "Office handbook", "embedding_model": EMBEDDER}, headers=user
        )
        assert base.status_code == 201, base.text
        base_id = base.json()["id"]
        office, passages = await add_document(
            api, session_maker, tenant_a, key, base_id, "office-handbook.md", [OPENS, PARKING]
        )
        await add_document(api, session_maker, tenant_a, key, base_id, "holidays.txt", [HOLIDAYS, SICK])
        conversation = await api.post(
            "/api/conversations",
            json={"model": "gpt-chat", "title": "Office questions", "use_memory": False},
            headers=user,
        )
        assert conversation.status_code == 201, conversation.text
        conversation_id = conversation.json()["id"]

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await page.goto(f"{lyss.url}/portal/chat/{conversation_id}")
    await page.click("details.chat-settings > summary")
    checkbox = page.get_by_label("Office handbook")
    await expect(checkbox).not_to_be_checked()
    await checkbox.check()
    await page.click("details.chat-settings button:text('Save settings')")
    await expect(page.locator("h1")).to_have_text("Office questions")
    await page.click("details.chat-settings > summary")
    await expect(page.get_by_label("Office handbook")).to_be_checked()
    await page.click("details.chat-settings > summary")

    await page.fill("#message", "When does the office open, and how do I book holidays?")
    await page.keyboard.press("Enter")
    answer = page.locator("#transcript .msg.assistant").last
    await expect(answer.locator(".md")).to_contain_text("The office opens at nine [1]")
    sources = answer.locator("ol.citations a")
    await expect(sources).to_have_count(2)
    first = sources.first
    await expect(first).to_have_text("office-handbook.md, page 1 — Handbook")
    assert await first.get_attribute("href") == (f"/portal/knowledge/{base_id}/documents/{office}#chunk-{passages[0]}")
    await expect(sources.nth(1)).to_contain_text("holidays.txt")
    # The provider was given the sources, numbered.
    system = next(body for name, body in reversed(upstream.bodies) if name == "kb-chat-e2e")["messages"][0]
    assert system["role"] == "system"
    assert f"[1] office-handbook.md, page 1, Handbook\n{OPENS} {PARKING}" in system["content"]
    await page.click("details.chat-settings > summary")
    await shoot_both_widths(page, "chat-knowledge")
    await context.close()
