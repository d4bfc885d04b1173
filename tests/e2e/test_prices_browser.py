"""Model prices in a real browser: an admin finds the prices page from Settings, narrows the built-in list to a
model her channel serves, overrides its price (a wrong amount is said next to its field), sees both prices
side by side, and removes the override to fall back to the list. Screenshots of the page at 1280 and 390 px
go to docs/screenshots/prices.png and prices-phone.png.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, Dialog, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_overrides_a_built_in_price_and_falls_back_to_it(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    # A channel serving a listed model and one of its own.
    await page.goto(f"{lyss.url}/portal/channels/new")
    await page.select_option("#type", "openai")
    await page.fill("#name", "Mock provider")
    await page.fill("#base_url", upstream.base_url("prices-e2e"))
    await page.fill("#keys", "sk-upstream-test")
    await page.fill("#models", "gpt-4o-mini\ngpt-e2e")
    await page.click("main button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/portal/channels$"))

    # From Settings to the prices page: the list's date, and the served models marked.
    await page.goto(f"{lyss.url}/portal/settings")
    await page.locator("#prices").get_by_role("link", name="Prices").click()
    await expect(page.locator("h1")).to_have_text("Model prices")
    await expect(page.locator("#price-list-date")).to_contain_text("2026")
    mini = page.locator("#price-gpt-4o-mini")
    await expect(mini.locator(".badge")).to_have_text("served")
    await expect(mini.locator("td").nth(1)).to_contain_text("$0.15 prompt")
    await expect(page.locator("#price-gpt-e2e .badge")).to_have_text("served")
    await shoot_both_widths(page, "prices")

    # Narrowed to OpenAI's minis.
    await page.fill("#q", "mini")
    await page.select_option("#provider", "openai")
    await page.click("text=Filter")
    await expect(page.locator("section[id^=group-]")).to_have_count(1)
    await expect(page.locator("#price-claude-3-5-haiku")).to_have_count(0)
    await expect(page.locator("#price-gpt-4o")).to_have_count(0)

    # An override, started from the list's price; a wrong amount first.
    await page.locator("#price-gpt-4o-mini").get_by_role("link", name="Set a price").click()
    await expect(page.locator("#prompt_price")).to_have_value("$0.15")
    await page.fill("#prompt_price", "twenty cents")
    await page.click("text=Save price")
    await expect(page.locator("#prompt_price-error")).to_contain_text("is not an amount of money")
    await expect(page.locator("#model")).to_have_value("gpt-4o-mini")
    await page.fill("#prompt_price", "0.20")
    await page.fill("#completion_price", "0.80")
    await page.click("text=Save price")
    await expect(page.locator(".notice.ok")).to_contain_text("The price is saved")
    own = page.locator("#price-gpt-4o-mini td").nth(2)
    await expect(own).to_contain_text("$0.20 prompt")
    await expect(own).to_contain_text("$0.80 completion")
    await expect(page.locator("#price-gpt-4o-mini td").nth(1)).to_contain_text("$0.15 prompt")

    # Removed: the built-in price is back.
    await page.locator("#price-gpt-4o-mini").get_by_role("button", name="Remove").click()
    await expect(page.locator(".notice.ok")).to_contain_text("Your price is removed")
    await expect(page.locator("#price-gpt-4o-mini td").nth(2)).to_have_text("The built-in price")
    await context.close()
