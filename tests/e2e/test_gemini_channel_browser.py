"""A Google Gemini channel made in a real browser: the type fills in Google's address, "Fetch models" asks
Gemini's model list with the key typed, the channel is saved and its test passes against the mock provider.

The run saves screenshots (wide and phone-sized) into docs/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_adds_and_tests_a_gemini_channel(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("browser-gem", models=["gemini-flash", "gemini-pro"])
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)

    await page.goto(f"{lyss.url}/portal/channels/new")
    await page.select_option("#type", "gemini")
    await expect(page.locator("#base_url")).to_have_value("https://generativelanguage.googleapis.com/v1beta")
    await page.fill("#name", "Gemini")
    await page.fill("#keys", "AIza-typed-in-browser")
    await page.fill("#base_url", upstream.gemini_base_url("browser-gem"))
    await page.click("button[data-fetch-models]")
    await expect(page.locator("#models")).to_have_value("gemini-flash\ngemini-pro")
    assert upstream.headers_seen[-1]["x-goog-api-key"] == "AIza-typed-in-browser"
    await shoot_both_widths(page, "channel-form-gemini")

    await page.click("text=Add channel")
    await expect(page).to_have_url(re.compile(r"/portal/channels$"))
    row = page.locator("tr", has_text="Gemini")
    await expect(row).to_contain_text("Google Gemini")
    await row.get_by_role("button", name="Test").click()
    await expect(row.locator(".test-result .badge.ok")).to_have_text("ok")
    assert upstream.headers_seen[-1]["path_qs"] == "/browser-gem/v1beta/models/gemini-flash:generateContent"
    assert upstream.headers_seen[-1]["x-goog-api-key"] == "AIza-typed-in-browser"
    await shoot_both_widths(page, "channels-gemini-tested")
    await context.close()
