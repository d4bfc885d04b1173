"""The response cache in a real browser: an admin turns it on in Settings (a wrong hit price is said next to its
field), a person issues a key that uses it, an identical call is answered from the cache and the usage log
says so. Screenshots at 1280 and 390 px: settings-response-cache, key-response-cache (docs/screenshots).
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_turns_the_response_cache_on_and_a_repeated_call_is_a_hit(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await page.goto(f"{lyss.url}/portal/channels/new")
    await page.fill("#name", "cache-e2e")
    await page.select_option("#type", "openai-compatible")
    await page.fill("#base_url", upstream.base_url("cache-e2e"))
    await page.fill("#keys", "k")
    await page.fill("#models", "gpt-test")
    await page.get_by_role("button", name="Add channel").click()

    await page.goto(f"{lyss.url}/portal/settings#response-cache")
    section = page.locator("#response-cache")
    await section.get_by_label("Answer repeated identical calls from the cache").check()
    await section.locator("#cache_hit_cost_fraction").fill("2")
    await section.get_by_role("button", name="Save response cache").click()
    await expect(page.locator("#cache_hit_cost_fraction-error")).to_be_visible()
    await page.locator("#response-cache #cache_hit_cost_fraction").fill("0.1")
    await page.locator("#response-cache #cache_ttl_seconds").fill("600")
    await page.locator("#response-cache").get_by_role("button", name="Save response cache").click()
    await expect(page.locator(".notice.ok")).to_contain_text("The response cache settings are saved")
    await expect(page.locator("#cache_ttl_seconds")).to_have_value("600")
    await expect(page.locator("#response-cache input[name=cache_enabled]")).to_be_checked()
    await page.locator("#response-cache").scroll_into_view_if_needed()
    await shoot_both_widths(page, "settings-response-cache")
    await context.close()

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await page.fill("#name", "cached key")
    await page.select_option("#response_cache", "on")
    await page.click("main button[type=submit]")
    key = (await page.locator("#new-key").text_content() or "").strip()
    assert key.startswith("sk-"), key
    async with httpx.AsyncClient(base_url=f"{lyss.url}/v1", headers={"Authorization": f"Bearer {key}"}) as v1:
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        first = await v1.post("/chat/completions", json=body)
        second = await v1.post("/chat/completions", json=body)
    assert (first.headers["x-lyss-cache"], second.headers["x-lyss-cache"]) == ("miss", "hit")
    assert second.json() == first.json()
    assert upstream.calls["cache-e2e"] == 1
    await page.goto(f"{lyss.url}/portal/tokens")
    edit = await page.get_by_role("link", name="cached key").first.get_attribute("href")
    await page.goto(f"{lyss.url}{edit}")
    await expect(page.locator("#response_cache")).to_have_value("on")
    await shoot_both_widths(page, "key-response-cache")
    await page.goto(f"{lyss.url}/portal/usage")
    await expect(page.locator("main")).to_contain_text("cache hit")
    await context.close()
