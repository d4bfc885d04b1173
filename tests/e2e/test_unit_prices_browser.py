"""The prices form's unit prices in a real browser: an admin sets a transcription model's price per second (a
wrong amount said next to its field, nothing saved), sees it listed, and the page with both rows of fields
fits 1280 and 390 px. Screenshots: docs/screenshots/prices-units.png and prices-units-phone.png, the form
showing an error at each width."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import PHONE, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Widest right edge of a field of the form, against the window's width.
FIELDS_RIGHT_EDGE = (
    "Math.max(...[...document.querySelectorAll('#set-price input')].map(i => i.getBoundingClientRect().right))"
)


async def wrong_amount(page: Page, url: str) -> None:
    await page.goto(f"{url}/portal/prices?model=whisper-e2e#set-price")
    await page.fill("#model", "whisper-e2e")
    await page.fill("#prompt_price", "0")
    await page.fill("#completion_price", "0")
    await page.fill("#audio_second_price", "a penny a minute")
    await page.click("text=Save price")
    await expect(page.locator("#audio_second_price-error")).to_contain_text("is not an amount of money")
    await expect(page.locator("#audio_second_price")).to_have_value("a penny a minute")


async def test_unit_prices_are_set_from_the_form_which_fits_a_phone(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    await wrong_amount(page, lyss.url)
    await expect(page.locator("#price-whisper-e2e")).to_have_count(0)
    await page.locator("#set-price").scroll_into_view_if_needed()
    await shoot(page, "prices-units")
    assert await page.evaluate(FIELDS_RIGHT_EDGE) <= WIDE["width"]

    await page.set_viewport_size(PHONE)
    await wrong_amount(page, lyss.url)
    await shoot(page, "prices-units-phone")
    assert await page.evaluate(FIELDS_RIGHT_EDGE) <= PHONE["width"]

    # A cent a minute, as a price per second.
    await page.fill("#audio_second_price", "0.0001")
    await page.click("text=Save price")
    await expect(page.locator(".notice.ok")).to_contain_text("The price is saved")
    await page.goto(f"{lyss.url}/portal/prices?q=whisper-e2e")
    listed = page.locator("#price-whisper-e2e")
    await expect(listed).to_contain_text(re.compile(r"\$0\.0001\s*per second transcribed"))
    await context.close()
