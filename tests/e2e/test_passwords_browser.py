"""Passwords and two-factor sign-in in a real browser: a person changes their password, an admin's reset link
works once, MFA goes off and on again and recovery codes are replaced. Screenshots of the account page (wide,
phone-sized, with MFA on) and of the reset page go to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect

from tests.support.browser import PHONE, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TEST_PASSWORD, TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NEW_PASSWORD = "a fresh and rather long passphrase"
RESET_PASSWORD = "the passphrase from the reset link"


async def _page(browser: Browser) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    # The portal confirms destructive buttons with window.confirm; a person clicks OK.
    page.on("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
    return context, page


async def test_a_password_change_and_an_admins_one_time_reset_link(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    user = tenant_a.user
    context, page = await _page(browser)
    await sign_in(page, lyss.url, tenant_a, user.email)
    await page.goto(f"{lyss.url}/portal/account")
    await expect(page.locator("#password-change .hint").first).to_contain_text("At least 12 characters")

    # A wrong current password is said next to its field; then the change goes through.
    await page.fill("#current_password", "not my password")
    await page.fill("#new_password", NEW_PASSWORD)
    await page.click("text=Change password")
    await expect(page.locator("#current_password-error")).to_have_text("The current password is wrong.")
    await page.fill("#current_password", TEST_PASSWORD)
    await page.fill("#new_password", "short")
    await page.click("text=Change password")
    await expect(page.locator("#new_password-error")).to_contain_text("at least 12 characters")
    await page.fill("#current_password", TEST_PASSWORD)
    await page.fill("#new_password", NEW_PASSWORD)
    await page.click("text=Change password")
    await expect(page.locator("#account-notice")).to_contain_text("Your password is changed")
    await shoot(page, "account")
    await page.set_viewport_size(PHONE)
    await shoot(page, "account-phone")
    await page.set_viewport_size(WIDE)

    # The old password no longer signs in; the new one does.
    await page.click(".signout button")
    await sign_in(page, lyss.url, tenant_a, user.email)
    await expect(page.locator(".notice.error")).to_contain_text("Invalid")
    await sign_in(page, lyss.url, tenant_a, user.email, NEW_PASSWORD)
    await expect(page).to_have_url(re.compile(r"/portal/$"))

    # An admin issues a reset link from the user's page and hands it over.
    admin_context, admin = await _page(browser)
    await sign_in(admin, lyss.url, tenant_a, tenant_a.admin.email)
    await admin.goto(f"{lyss.url}/portal/users/{user.id}")
    await admin.click("text=Issue a password reset link")
    link = (await admin.locator("#reset-link").text_content() or "").strip()
    assert "/portal/reset/lrst_" in link
    # The link names LYSS_PUBLIC_URL; this server listens on a port of its own.
    reset = f"{lyss.url}{urlsplit(link).path}"

    stranger_context, stranger = await _page(browser)
    await stranger.goto(reset)
    await expect(stranger.locator("h1")).to_have_text("Set a new password")
    await stranger.fill("#new_password", "password1234")
    await stranger.click("text=Set password")
    await expect(stranger.locator("#new_password-error")).to_contain_text("too common")
    await shoot(stranger, "password-reset")
    await stranger.fill("#new_password", RESET_PASSWORD)
    await stranger.click("text=Set password")
    await expect(stranger.locator("h1")).to_have_text("Your password is set")

    # The user's browser was signed out by the reset; the link works once.
    await page.goto(f"{lyss.url}/portal/account")
    await expect(page).to_have_url(re.compile(r"/portal/login"))
    await stranger.goto(reset)
    await expect(stranger.locator("h1")).to_have_text("This link does not work")
    await expect(stranger.locator(".notice.error")).to_contain_text("already used")
    await sign_in(stranger, lyss.url, tenant_a, user.email, RESET_PASSWORD)
    await expect(stranger).to_have_url(re.compile(r"/portal/$"))
    for opened in (context, admin_context, stranger_context):
        await opened.close()


def _step() -> int:
    return int(time.time()) // 30


async def _code_after(totp: pyotp.TOTP, used_step: int) -> tuple[str, int]:
    """The code of the step after `used_step` (each step is good once), once the server accepts it: it allows
    one step either side of its own."""
    await asyncio.sleep(max(0.0, used_step * 30 - time.time()))
    return totp.at((used_step + 1) * 30), used_step + 1


async def _enrol(page: Page, lyss: RunningLyss) -> tuple[pyotp.TOTP, int, list[str]]:
    await page.goto(f"{lyss.url}/portal/account")
    await page.click("text=Set up two-factor authentication")
    await page.fill("#code", "000000")
    await page.click("text=Turn on")
    await expect(page.locator("#code-error")).to_be_visible()
    await expect(page.locator(".qr svg")).to_be_visible()  # the key survives a wrong code
    totp = pyotp.TOTP((await page.locator("#mfa-secret").text_content() or "").strip())
    # Enrolled with the previous step's code (the server allows one step either side): the current and the next
    # step's codes are then both fresh, so the test's next two codes need no wait for the clock. Not within the
    # last seconds of a step, lest it end before the server checks the code.
    left_in_step = (_step() + 1) * 30 - time.time()
    if left_in_step < 3:
        await asyncio.sleep(left_in_step)
    step = _step() - 1
    await page.fill("#code", totp.at(step * 30))
    await page.click("text=Turn on")
    await expect(page.locator("h1")).to_have_text("Two-factor authentication is on")
    return totp, step, (await page.locator("#recovery-codes").text_content() or "").split()


async def test_mfa_off_and_on_again_and_recovery_codes_replaced(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    user = tenant_a.user
    context, page = await _page(browser)
    await sign_in(page, lyss.url, tenant_a, user.email)
    totp, used_step, old_codes = await _enrol(page, lyss)
    assert len(old_codes) == 10

    # New recovery codes for a current code; the old ones stop working.
    await page.goto(f"{lyss.url}/portal/account")
    await page.fill("#code", "123456")
    await page.click("text=Replace recovery codes")
    await expect(page.locator("#code-error")).to_have_text("The code is wrong or was already used.")
    code, used_step = await _code_after(totp, used_step)
    await page.fill("#code", code)
    await page.click("text=Replace recovery codes")
    await expect(page.locator("h1")).to_have_text("New recovery codes")
    new_codes = (await page.locator("#recovery-codes").text_content() or "").split()
    assert len(new_codes) == 10
    assert not set(new_codes) & set(old_codes)

    await page.click(".signout button")
    await sign_in(page, lyss.url, tenant_a, user.email)
    await expect(page).to_have_url(re.compile(r"/portal/login/mfa"))
    await page.click("summary")
    await page.fill("#recovery_code", old_codes[0])
    await page.click("text=Verify")
    await expect(page.locator(".field-error")).to_contain_text("wrong")
    await page.fill("#recovery_code", new_codes[0])
    await page.click("text=Verify")
    await expect(page).to_have_url(re.compile(r"/portal/$"))

    # Off: the password and a current code; a wrong password changes nothing.
    await page.goto(f"{lyss.url}/portal/account")
    await page.fill("#password", "not my password")
    await page.fill("#off-code", (await _code_after(totp, used_step))[0])
    await page.click("text=Turn off two-factor authentication")
    await expect(page.locator("#two-factor .notice.error")).to_have_text("The password or the code is wrong.")
    await shoot(page, "account-mfa")
    await page.fill("#password", TEST_PASSWORD)
    await page.fill("#off-code", (await _code_after(totp, used_step))[0])
    await page.click("text=Turn off two-factor authentication")
    await expect(page.locator("#account-notice")).to_have_text("Two-factor authentication is off.")
    await expect(page.locator("text=Set up two-factor authentication")).to_be_visible()

    # And on again, with a new key.
    second, _, codes = await _enrol(page, lyss)
    assert second.secret != totp.secret
    assert len(codes) == 10
    await context.close()
