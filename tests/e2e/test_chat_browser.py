"""The chat page in a real browser: an end user starts a conversation, watches an answer stream in word by word,
attaches a file, stops a second answer half-way (the part that arrived stays, is stored and is billed), on a wide
and a phone screen.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, FilePayload, Page, expect

from tests.support.browser import PHONE, WIDE, lengths_while_streaming, open_from_menu, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FIRST_ANSWER = "Here is a **plan** for `Lisbon`:\n\n- Alfama in the morning\n- Belém after lunch\n\nEnjoy <b>it</b>!"
LONG_ANSWER = " ".join(f"word{index}" for index in range(60))
NOTES = "Museum tickets are booked for Sunday."
STREAMING = "#transcript .msg.assistant.streaming .md"


async def _api(page: Page, url: str) -> Any:
    # The page's own cookies: what the signed-in user's browser may read.
    response = await page.request.get(url)
    assert response.ok, await response.text()
    return await response.json()


async def test_an_end_user_chats_with_a_streamed_answer_and_stops_one(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("chat-e2e", replies=[FIRST_ANSWER, LONG_ANSWER], chunk_delay_seconds=0.2)
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        channel = await api.post(
            "/api/channels",
            json={
                "name": "Mock provider",
                "type": "openai-compatible",
                "models": ["gpt-chat"],
                "keys": ["sk-upstream-test"],
                "base_url": upstream.base_url("chat-e2e"),
            },
            headers=lyss.headers_for(tenant_a.admin),
        )
        assert channel.status_code == 201, channel.text

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await open_from_menu(page, "Chat")
    await expect(page).to_have_url(f"{lyss.url}/portal/chat")
    await page.fill("#title", "Weekend in Lisbon")
    await page.select_option("#model", "gpt-chat")
    await page.click("main button:text('Start')")
    await expect(page.locator("h1")).to_have_text("Weekend in Lisbon")
    conversation_id = page.url.rsplit("/", 1)[-1]

    # Shift+Enter is a new line; Enter sends.
    await expect(page.locator("#stop")).to_be_hidden()
    await page.click("#message")
    await page.keyboard.type("Plan my weekend")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("in two lines")
    await expect(page.locator("#message")).to_have_value("Plan my weekend\nin two lines")
    await expect(page.locator("#transcript .msg")).to_have_count(0)
    await page.keyboard.press("Enter")
    question = page.locator("#transcript .msg.user")
    await expect(question).to_have_text("Plan my weekend\nin two lines", use_inner_text=True)
    lengths = await lengths_while_streaming(page, STREAMING)
    # It grew piece by piece while the provider was still sending.
    growth = [length for length in sorted(set(lengths)) if length > 0]
    assert len(growth) >= 3, lengths
    assert lengths == sorted(lengths), lengths

    # The stored answer replaces the streamed one: Markdown as elements, the model's HTML as text.
    answer = page.locator("#transcript .msg.assistant").last
    await expect(answer.locator("strong")).to_have_text("plan")
    await expect(answer.locator("code").first).to_have_text("Lisbon")
    await expect(answer.locator("li")).to_have_text(["Alfama in the morning", "Belém after lunch"])
    await expect(answer.locator("b")).to_have_count(0)
    await expect(answer).to_contain_text("Enjoy <b>it</b>!")
    await expect(answer.locator(".hint")).to_contain_text("gpt-chat")
    await shoot(page, "chat")

    # A file that is not text is refused before anything is sent; a text file goes with the next message.
    await page.set_input_files("#attachment", {"name": "photo.png", "mimeType": "image/png", "buffer": b"\x89PNG"})
    await page.fill("#message", "Look at this")
    await page.press("#message", "Enter")
    await expect(page.locator("#composer-error")).to_contain_text("Attach text files")
    await expect(page.locator("#transcript .msg")).to_have_count(2)
    await expect(page.locator("#message")).to_have_value("Look at this")
    notes: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": NOTES.encode()}
    await page.set_input_files("#attachment", notes)

    # A second message, stopped half-way: the text stops growing and what arrived stays.
    await page.fill("#message", "Now tell me everything")
    await page.press("#message", "Enter")
    await expect(page.locator("#composer-error")).to_be_hidden()
    await expect(page.locator(STREAMING)).to_contain_text("word4")
    await expect(page.locator("#stop")).to_be_visible()
    await page.click("#stop")
    stopped = page.locator("#transcript .msg.assistant").last
    await expect(stopped.locator(".badge")).to_have_text("stopped")
    await expect(page.locator("#stop")).to_be_hidden()
    shown = (await stopped.locator(".md").text_content() or "").split()
    await asyncio.sleep(1.0)
    assert (await stopped.locator(".md").text_content() or "").split() == shown
    assert 5 <= len(shown) < 60
    assert NOTES in upstream.bodies[-1][1]["messages"][-1]["content"]

    # The server kept the part that arrived as an incomplete answer, and the gateway billed the call.
    for _ in range(50):
        detail = await _api(page, f"{lyss.url}/api/conversations/{conversation_id}")
        if len(detail["messages"]) == 4:
            break
        await asyncio.sleep(0.2)
    stored = detail["messages"][-1]
    assert stored["status"] == "incomplete"
    assert stored["content"].split()[: len(shown)] == shown
    assert len(stored["content"].split()) < 60
    chats = [row for row in (await _api(page, f"{lyss.url}/api/usage"))["items"] if row["stream"]]
    assert len(chats) == 2
    # Newest first: the stopped call, charged for the pieces delivered before the stop.
    assert 0 < chats[0]["completion_tokens"] < 60

    # After a reload the transcript shows the stopped answer as incomplete; the phone layout fits 390 px.
    phone = await browser.new_context(viewport=PHONE)
    phone_page = await phone.new_page()
    await sign_in(phone_page, lyss.url, tenant_a, tenant_a.user.email)
    await phone_page.goto(f"{lyss.url}/portal/chat/{conversation_id}")
    await expect(phone_page.locator("#transcript .msg.assistant .badge.warn")).to_have_text("incomplete")
    await expect(phone_page.locator("#transcript .msg.user").last).to_contain_text("Attached: notes.txt")
    await expect(phone_page.locator("#message")).to_be_visible()
    await shoot(phone_page, "chat-phone")
    await expect(phone_page.locator("h1")).to_have_text(re.compile("Weekend in Lisbon"))
    await phone.close()
    await context.close()
