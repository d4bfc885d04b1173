"""Concurrency limits in a real browser: an admin bounds a channel's calls in flight (a wrong number is said
next to its field), a person's concurrent requests on their user page and a key's concurrent requests; the
key then runs one call at a time and the second is refused with 429. Screenshots at 1280 and 390 px:
channel-concurrency, user-concurrency, key-concurrency (docs/screenshots).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_sets_concurrency_limits_in_the_portal_and_a_key_keeps_to_them(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("concurrency-e2e", hang_seconds=0.5)
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    await page.goto(f"{lyss.url}/portal/channels/new")
    await page.fill("#name", "concurrency-e2e")
    await page.select_option("#type", "openai-compatible")
    await page.fill("#base_url", upstream.base_url("concurrency-e2e"))
    await page.fill("#keys", "k")
    await page.fill("#models", "gpt-test")
    await page.fill("#max_in_flight", "-2")
    await page.get_by_role("button", name="Add channel").click()
    await expect(page.locator("#max_in_flight-error")).to_have_text("At least 0.")
    await page.fill("#keys", "k")  # keys are never sent back
    await page.fill("#max_in_flight", "4")
    await page.get_by_role("button", name="Add channel").click()
    await page.get_by_role("link", name="concurrency-e2e").first.click()
    await expect(page.locator("#max_in_flight")).to_have_value("4")
    await shoot_both_widths(page, "channel-concurrency")

    await page.goto(f"{lyss.url}/portal/users/{tenant_a.user.id}")
    await page.locator("#budget #max_concurrent").fill("5")
    await page.locator("#budget #max_streams").fill("2")
    await page.locator("#budget").get_by_role("button", name="Save budget and policy").click()
    await expect(page.locator(".notice.ok")).to_contain_text("The budget and policy are saved")
    await expect(page.locator("#budget #max_concurrent")).to_have_value("5")
    await shoot_both_widths(page, "user-concurrency")
    await context.close()

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await page.fill("#name", "one at a time")
    await page.fill("#max_concurrent", "1")
    await page.click("main button[type=submit]")
    key = (await page.locator("#new-key").text_content() or "").strip()
    assert key.startswith("sk-"), key
    async with httpx.AsyncClient(base_url=f"{lyss.url}/v1", headers={"Authorization": f"Bearer {key}"}) as v1:
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        first, second = await asyncio.gather(
            v1.post("/chat/completions", json=body), v1.post("/chat/completions", json=body)
        )
    assert sorted((first.status_code, second.status_code)) == [200, 429]
    refused = first if first.status_code == 429 else second
    assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
    await page.goto(f"{lyss.url}/portal/tokens")
    await expect(page.locator("main table")).to_contain_text("1 at once")
    edit = await page.get_by_role("link", name="one at a time").first.get_attribute("href")
    await page.goto(f"{lyss.url}{edit}")
    await expect(page.locator("#max_concurrent")).to_have_value("1")
    await shoot_both_widths(page, "key-concurrency")
    await context.close()
