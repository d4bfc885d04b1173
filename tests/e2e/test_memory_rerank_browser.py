"""The memory rerank settings in a real browser: the candidates field refuses a bad number next to itself,
a good one is saved and shown again; the form's section is photographed at 1280 and 390 px."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import PHONE, SCREENSHOTS, WIDE, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def shoot_defaults(page: Page, name: str) -> None:
    """The memory and chat defaults section only (the settings page is long), and proof the page fits."""
    await page.locator("#defaults").screenshot(path=SCREENSHOTS / f"{name}.png")
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"


async def test_the_rerank_settings_are_checked_saved_and_fit_a_phone(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await page.goto(f"{lyss.url}/portal/settings#defaults")
    await expect(page.locator("#rerank_model option")).to_have_text(["None: searches keep their own order"])
    await expect(page.locator("#rerank_candidates")).to_have_value("20")

    await page.fill("#rerank_candidates", "1")
    await page.click("#defaults button[type=submit]")
    await expect(page.locator("#rerank_candidates-error")).to_be_visible()
    await expect(page.locator("#rerank_candidates")).to_have_attribute("aria-invalid", "true")
    await shoot_defaults(page, "settings-memory-rerank-error")
    await page.set_viewport_size(PHONE)
    await shoot_defaults(page, "settings-memory-rerank-error-phone")
    await page.set_viewport_size(WIDE)

    await page.fill("#rerank_candidates", "40")
    await page.click("#defaults button[type=submit]")
    await expect(page.locator(".notice.ok")).to_contain_text("The memory and chat defaults are saved.")
    await expect(page.locator("#rerank_candidates")).to_have_value("40")
    await context.close()
