"""The stored-response retention in a real browser: the security policy's days field refuses a bad number next to
itself, a good one is saved and shown again; the section is photographed at 1280 and 390 px."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import PHONE, SCREENSHOTS, WIDE, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def shoot_policy(page: Page, name: str) -> None:
    """The security policy section only (the settings page is long), and proof the page fits."""
    await page.locator("#policy").screenshot(path=SCREENSHOTS / f"{name}.png")
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"


async def test_the_response_retention_is_checked_saved_and_fits_a_phone(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await page.goto(f"{lyss.url}/portal/settings#policy")
    await expect(page.locator("#response_retention_days")).to_have_value("30")

    await page.fill("#response_retention_days", "0")
    await page.click("#policy button[type=submit]")
    await expect(page.locator("#response_retention_days-error")).to_have_text("At least 1.")
    await expect(page.locator("#response_retention_days")).to_have_attribute("aria-invalid", "true")
    await shoot_policy(page, "settings-response-retention-error")
    await page.set_viewport_size(PHONE)
    await shoot_policy(page, "settings-response-retention-error-phone")
    await page.set_viewport_size(WIDE)

    await page.fill("#response_retention_days", "90")
    await page.click("#policy button[type=submit]")
    await expect(page.locator(".notice.ok")).to_contain_text("The security policy is saved.")
    await expect(page.locator("#response_retention_days")).to_have_value("90")
    await context.close()
