"""Driving Debian's chromium through Playwright: launch flags, viewports, screenshots, signing in, streams."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, ViewportSize, expect

from tests.support.commands import REPOSITORY_ROOT
from tests.support.tenants import TEST_PASSWORD, TenantRows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPOSITORY_ROOT / "docs" / "screenshots"
WIDE: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


async def shoot(page: Page, name: str) -> None:
    """A full-page screenshot, and proof the page fits its width (tables scroll inside their own box)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"


async def sign_in(page: Page, url: str, tenant: TenantRows, email: str, password: str = TEST_PASSWORD) -> None:
    await page.goto(f"{url}/portal/login")
    await page.fill("#tenant", tenant.slug)
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("button[type=submit]")


async def lengths_while_streaming(page: Page, selector: str, every: float = 0.05) -> list[int]:
    """The text length of the element `selector` finds, sampled until it is gone (an answer being streamed)."""
    await expect(page.locator(selector)).to_have_count(1)
    # Checked and read in one step in the page: the element may be replaced between two steps.
    read = "(selector) => { const it = document.querySelector(selector); return it ? it.textContent.length : -1; }"
    lengths = []
    while (length := await page.evaluate(read, selector)) >= 0:
        lengths.append(length)
        await asyncio.sleep(every)
    return lengths


async def shoot_both_widths(page: Page, name: str) -> None:
    """Screenshots at 1280 and at 390 px (the menu folded, as a phone loads the page), then wide again."""
    await shoot(page, name)
    await page.set_viewport_size(PHONE)
    menu = page.locator("details.menu")
    await _menu_laid_out(page, wide=False)
    if await menu.count() and await menu.get_attribute("open") is not None:
        await menu.locator(":scope > summary").click()
    await shoot(page, f"{name}-phone")
    await page.set_viewport_size(WIDE)
    await _menu_laid_out(page, wide=True)


async def _menu_laid_out(page: Page, *, wide: bool) -> None:
    """Wait for the portal's script to lay the menu out for the new width (it does on the width's change
    event, after the resize returns): a menu looked at before then is changed under the next click."""
    if not await page.locator("details.menu").count():
        return
    if wide:
        await expect(page.locator("details.menu")).to_have_attribute("open", "")
        await expect(page.locator("details.menu-group[open]")).to_have_count(0)
    else:
        await expect(page.locator("details.menu-group:not([open])")).to_have_count(0)


async def open_from_menu(page: Page, label: str) -> None:
    """Follow a link of the portal's menu, opening what holds it first: the menu on a phone, its dropdown."""
    link = page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True)
    menu = page.locator("details.menu")
    summary = menu.locator(":scope > summary")
    # A wide window shows the bar even while its <details> is closed, with the "Menu" button hidden.
    if await menu.get_attribute("open") is None and await summary.is_visible():
        await summary.click()
    if not await link.is_visible():
        # Role queries skip what a closed <details> hides: find its group by the link's text instead.
        group = page.locator("details.menu-group", has=page.locator(f'a:text-is("{label}")'))
        # Only a closed group is opened: a click on an open one's summary would close it.
        if await group.get_attribute("open") is None:
            await group.locator("summary").click()
    await link.click()
