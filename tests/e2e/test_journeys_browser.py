"""A whole journey in a real browser, by clicks alone once Lyss runs: from an invitation to a memory used.

An admin sets up a provider and memory in the portal and invites someone; the invitee joins through the copied
link, chats (an answer streams in, a second one is stopped), finds the fact they mentioned among their memories
and sees it used, with a link, in a new conversation's answer. (The first-start journey is in
test_first_start_browser.py, a file of its own so that the two run side by side.)

Saves `journey-*.png` (1280 and 390 px wide) into docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from db.bootstrap import DatabaseUrls
from tests.support.browser import WIDE, lengths_while_streaming, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

INVITEE = "bee.keeper@alpha.example.com"
FACT = "Keeps bees in Porto"
FIRST_ANSWER = "How lovely! Bees in Porto must enjoy the mild Atlantic climate and the many gardens nearby."
# Long enough (30 s at its pace) that a busy machine still finds it streaming when Stop is pressed.
LONG_ANSWER = " ".join(f"word{index}" for index in range(300))
RECALL_ANSWER = "Your bees live in Porto."
STREAMING = "#transcript .msg.assistant.streaming .md"


@pytest.fixture
def lyss_with_worker(database: DatabaseUrls, redis_url: str, tmp_path: Path) -> Iterator[RunningLyss]:
    """`lyss serve` with its embedded job worker, which runs the memory extraction a chat turn starts."""
    with serve_lyss(database, redis_url, tmp_path, LYSS_EMBEDDED_WORKER="true") as running:
        yield running


async def _add_channel(page: Page, url: str, name: str, base_url: str, models: list[str]) -> None:
    await page.goto(f"{url}/portal/channels")
    await page.click("main >> text=Add a channel")
    await page.fill("#name", name)
    await page.select_option("#type", "openai-compatible")
    await page.fill("#base_url", base_url)
    await page.fill("#keys", "sk-upstream-test")
    await page.fill("#models", "\n".join(models))
    await page.click("main button[type=submit]")
    await expect(page.locator("main")).to_contain_text(name)


async def _start_conversation(page: Page, title: str, model: str) -> None:
    await page.fill("#title", title)
    await page.select_option("#model", model)
    await page.click("main button:text('Start')")
    await expect(page.locator("h1")).to_have_text(title)


async def test_an_invitee_joins_chats_stops_an_answer_and_sees_a_memory_used(
    lyss_with_worker: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    lyss = lyss_with_worker
    upstream.behave("journey-chat", replies=[FIRST_ANSWER, LONG_ANSWER, RECALL_ANSWER], chunk_delay_seconds=0.1)
    # Every turn's extraction finds the same fact: the first adds it, later ones find it remembered already.
    extraction = json.dumps({"facts": [{"text": FACT, "type": "fact", "importance": 60}]})
    upstream.behave("journey-memory", replies=[extraction] * 5, dimensions=256)

    # The admin: a provider for chat, one for memory, memory turned on, all in the portal.
    admin_context = await browser.new_context(viewport=WIDE)
    await admin_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lyss.url)
    admin = await admin_context.new_page()
    await sign_in(admin, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(admin.locator("h1")).to_have_text("Organization usage")
    await _add_channel(admin, lyss.url, "Mock chat", upstream.base_url("journey-chat"), ["gpt-chat"])
    await _add_channel(
        admin, lyss.url, "Mock memory", upstream.base_url("journey-memory"), ["memory-llm", "embed-test"]
    )
    await admin.goto(f"{lyss.url}/portal/settings")
    defaults = admin.locator("#defaults")
    await defaults.locator("input[name=enabled]").check()
    await defaults.locator("#llm_model").select_option("memory-llm")
    await defaults.locator("#embedding_model").select_option("embed-test")
    await defaults.locator("button[type=submit]").click()
    await expect(admin.locator(".notice.ok")).to_be_visible()
    await expect(admin.locator("#defaults #llm_model")).to_have_value("memory-llm")

    # ... invites someone and copies the link.
    await admin.goto(f"{lyss.url}/portal/users")
    await admin.click("main >> text=Invite")
    await admin.fill("#email", INVITEE)
    await admin.click("main button[type=submit]")
    await admin.click("text=Copy link")
    link = await admin.evaluate("navigator.clipboard.readText()")
    assert link.startswith(f"{lyss.url}/portal/join/"), link
    await admin_context.close()

    # The invitee, in a browser of their own: joins and is signed in.
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await page.goto(link)
    await expect(page.locator("#email")).to_have_value(INVITEE)
    await page.fill("#full_name", "Bee Keeper")
    await page.fill("#password", "a long and unusual passphrase 42")
    await shoot_both_widths(page, "journey-join")
    await page.click("main button[type=submit]")
    await expect(page).to_have_url(f"{lyss.url}/portal/")
    await expect(page.locator(".who")).to_have_text(INVITEE)

    # Chat from the navigation: a fact is mentioned, and the answer streams in.
    await open_from_menu(page, "Chat")
    await expect(page).to_have_url(f"{lyss.url}/portal/chat")
    await _start_conversation(page, "About me", "gpt-chat")
    await page.fill("#message", "I keep bees in Porto")
    await page.press("#message", "Enter")
    lengths = await lengths_while_streaming(page, STREAMING)
    assert len({length for length in lengths if length > 0}) >= 3, lengths
    assert lengths == sorted(lengths), lengths
    await expect(page.locator("#transcript .msg.assistant").last).to_contain_text("mild Atlantic climate")

    # A second answer, stopped half-way: it stops growing and what arrived stays.
    await page.fill("#message", "Tell me everything about bees")
    await page.press("#message", "Enter")
    await expect(page.locator(STREAMING)).to_contain_text("word4")
    await page.click("#stop")
    stopped = page.locator("#transcript .msg.assistant").last
    await expect(stopped.locator(".badge")).to_have_text("stopped")
    shown = (await stopped.locator(".md").text_content() or "").split()
    await asyncio.sleep(0.5)
    assert (await stopped.locator(".md").text_content() or "").split() == shown
    assert 5 <= len(shown) < 300, shown
    await shoot_both_widths(page, "journey-chat")

    # The worker turned the first turn into a memory, which the invitee finds among theirs.
    await open_from_menu(page, "Memories")
    await expect(page).to_have_url(f"{lyss.url}/portal/memories")
    deadline = time.monotonic() + 30
    while not await page.locator("main", has_text=FACT).count():
        assert time.monotonic() < deadline, "the memory did not appear"
        await asyncio.sleep(0.5)
        await page.reload()
    memory_link = page.locator(f"main a:text('{FACT}')").first
    memory_href = await memory_link.get_attribute("href")
    assert memory_href is not None
    assert re.fullmatch(r"/portal/memories/[0-9a-f-]{36}", memory_href), memory_href

    # A new conversation asks about it: the answer lists the memory it used, linked.
    await open_from_menu(page, "Chat")
    await _start_conversation(page, "A question", "gpt-chat")
    await page.fill("#message", "Where do I keep bees?")
    await page.press("#message", "Enter")
    answer = page.locator("#transcript .msg.assistant").last
    await expect(answer.locator(".md")).to_have_text(RECALL_ANSWER)
    used = answer.locator("details.memories")
    await expect(used.locator("summary")).to_have_text("Memories used (1)")
    await used.locator("summary").click()
    await expect(used.locator("a")).to_have_text(FACT)
    await expect(used.locator("a")).to_have_attribute("href", memory_href)
    await shoot_both_widths(page, "journey-memory-used")
    await used.locator("a").click()
    await expect(page).to_have_url(f"{lyss.url}{memory_href}")
    await expect(page.locator("main")).to_contain_text(FACT)
    await context.close()
