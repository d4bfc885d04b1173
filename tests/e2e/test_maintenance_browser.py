"""Maintenance mode in a real browser against a running `lyss serve`, switched on and off by the `lyss` command.

The banner is on every page, signing in still works, a form post is refused with the operator's message,
and once the command turns it off the next post goes through: no restart. Screenshots of a page with the
banner at 1280 and 390 px go to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import LYSS, RunningLyss, lyss_environment
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MESSAGE = "Upgrading the database; back by 14:00 UTC."


async def run_lyss(lyss: RunningLyss, *arguments: str) -> str:
    """The `lyss` command in a process of its own, as an operator runs it beside the server."""
    environment = lyss_environment(
        DATABASE_URL=str(lyss.settings.database_url),
        REDIS_URL=str(lyss.settings.redis_url),
        LYSS_ENCRYPTION_KEYS=lyss.settings.encryption_keys or "",
        LYSS_JWT_KEYS=lyss.settings.jwt_keys or "",
    )
    done = await asyncio.to_thread(
        subprocess.run, [LYSS, *arguments], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_maintenance_banner_refused_post_and_off_without_a_restart(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    version = (await (await page.request.get(f"{lyss.url}/api/version")).json())["version"]
    assert "Maintenance mode is on" in await run_lyss(lyss, "maintenance", "on", "--message", MESSAGE)
    try:
        await asyncio.sleep(1.1)  # the server's copy of the switch is at most a second old
        await page.goto(f"{lyss.url}/portal/login")
        banner = page.locator("p.maintenance")
        await expect(banner).to_contain_text(MESSAGE)
        await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)  # signing in stays open
        await expect(page.locator("h1")).to_be_visible()
        await expect(banner).to_contain_text(MESSAGE)
        await expect(page.locator("footer.site-footer")).to_have_text(f"Lyss {version}")

        await page.goto(f"{lyss.url}/portal/tokens/new")
        await expect(banner).to_be_visible()
        await shoot_both_widths(page, "maintenance-banner")
        await page.fill("#name", "during maintenance")
        await page.click("main button[type=submit]")
        await expect(page.locator("main")).to_contain_text(MESSAGE)
        await expect(page.locator("h1")).to_have_text("Temporarily unavailable")
        await shoot_both_widths(page, "maintenance-refused-post")

        assert (await run_lyss(lyss, "maintenance", "off")).strip() == "Maintenance mode is off."
        await asyncio.sleep(1.1)
        await page.goto(f"{lyss.url}/portal/tokens/new")
        await expect(banner).to_have_count(0)
        await page.fill("#name", "after maintenance")
        await page.click("main button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Key “after maintenance” issued")
    finally:
        await run_lyss(lyss, "maintenance", "off")
        await context.close()
