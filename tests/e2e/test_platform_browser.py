"""The platform operator's pages in a real browser, against `lyss serve`: a super admin opens Tenants from the
Platform menu, filters the list, renames an organization after a refused empty name, suspends and reactivates it.

Saves `platform-tenants*.png` and `platform-tenant*.png` (1280 and 390 px wide) into docs/screenshots/.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.browser import WIDE, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.platform import super_admin_of
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_the_operator_suspends_and_reactivates_a_tenant_from_the_portal(
    lyss: RunningLyss,
    browser: Browser,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    operator = await super_admin_of(session_maker, tenant_b)
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, lyss.url, tenant_b, operator.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    await open_from_menu(page, "Tenants")
    await expect(page.locator("h1")).to_have_text("Tenants")
    await expect(page.locator(f"#tenant-{tenant_a.slug}")).to_contain_text("active")
    await expect(page.locator(f"#tenant-{tenant_b.slug}")).to_be_visible()
    await shoot_both_widths(page, "platform-tenants")

    await page.fill("#plan", "Not a plan")
    await page.click("text=Filter")
    await expect(page.locator("#plan-error")).to_contain_text("lower-case letters")
    await page.fill("#plan", "")
    await page.select_option("#status", "suspended")
    await page.click("text=Filter")
    await expect(page.locator(".card.empty")).to_have_text("No organization matches these filters.")

    await page.goto(f"{lyss.url}/portal/platform/tenants/{tenant_a.id}")
    await page.fill("#name", "")
    await page.click("text=Rename")
    await expect(page.locator("#name-error")).to_have_text("The organization needs a name.")
    await page.fill("#name", "Alpha Corporation")
    await page.click("text=Rename")
    await expect(page.locator("h1")).to_have_text("Alpha Corporation")
    await page.click("main button:text-is('Suspend')")
    await expect(page.locator("#tenant-status")).to_have_text("suspended")
    await expect(page.locator(".notice.ok")).to_contain_text("The organization is suspended")
    await shoot_both_widths(page, "platform-tenant")
    await page.click("main button:text-is('Reactivate')")
    await expect(page.locator("#tenant-status")).to_have_text("active")
    await context.close()
