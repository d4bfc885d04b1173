"""Joining Lyss in a real browser: an admin invites someone and copies the link; the invitee, in a browser of
their own, opens it, chooses a password and is signed in; the same link then no longer works.

The admin re-issues a pending invitation from the Users page, on a phone: the first link stops working.
Saves `invite-link.png`, `join.png`, `join-phone.png` and `invitations-phone.png` (390 px) into docs/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import PHONE, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

INVITEE = "new.colleague@alpha.example.com"


async def test_an_invitee_joins_through_the_copied_link(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    admin_context = await browser.new_context(viewport=WIDE)
    await admin_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lyss.url)
    admin = await admin_context.new_page()
    await sign_in(admin, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(admin.locator("h1")).to_have_text("Organization usage")
    await admin.goto(f"{lyss.url}/portal/users/invite")
    await admin.fill("#email", INVITEE)
    await admin.click("main button[type=submit]")
    await expect(admin.locator("main")).to_contain_text(f"Send this link to {INVITEE}")
    await admin.click("text=Copy link")
    await expect(admin.locator("[data-copy=invitation-link]")).to_have_text("Copied")
    link = await admin.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(rf"{re.escape(lyss.url)}/portal/join/linv_\w+_[\w-]+", link), link
    await expect(admin.locator("main")).to_contain_text("expires on")
    await shoot(admin, "invite-link")

    # The invitee: a browser of their own, no session.
    invitee_context = await browser.new_context(viewport=WIDE)
    invitee = await invitee_context.new_page()
    await invitee.goto(link)
    await expect(invitee.locator("h1")).to_have_text(f"Join {tenant_a.slug.title()}")
    await expect(invitee.locator("#email")).to_have_value(INVITEE)
    await expect(invitee.locator("#password-rules")).to_contain_text("at least 12 characters")
    await shoot(invitee, "join")
    await invitee.fill("#full_name", "New Colleague")
    await invitee.fill("#password", "too short")
    await invitee.click("main button[type=submit]")
    await expect(invitee.locator("#password-error")).to_contain_text("at least 12 characters")
    await expect(invitee.locator("#full_name")).to_have_value("New Colleague")
    await invitee.fill("#password", "a long and unusual passphrase 42")
    await invitee.click("main button[type=submit]")
    await expect(invitee).to_have_url(f"{lyss.url}/portal/")
    await expect(invitee.locator(".who")).to_have_text(INVITEE)
    await invitee.goto(f"{lyss.url}/portal/account")
    await expect(invitee.locator("main")).to_contain_text(INVITEE)

    # The link worked once.
    await invitee.goto(link)
    await expect(invitee.locator("h1")).to_have_text("This invitation link does not work")
    await invitee_context.close()

    # The same page on a phone, for an invitation of its own.
    await admin.goto(f"{lyss.url}/portal/users/invite")
    await admin.fill("#email", "phone.colleague@alpha.example.com")
    await admin.click("main button[type=submit]")
    phone_link = (await admin.locator("#invitation-link").text_content() or "").strip()
    phone_context = await browser.new_context(viewport=PHONE)
    phone = await phone_context.new_page()
    await phone.goto(phone_link)
    await expect(phone.locator("#password-rules")).to_be_visible()
    await shoot(phone, "join-phone")

    # The admin, on a phone too, re-issues that invitation from the Users page: the first link dies.
    await admin.set_viewport_size(PHONE)
    await admin.goto(f"{lyss.url}/portal/users")
    pending = admin.locator("#invitations-table tr", has_text="phone.colleague@alpha.example.com")
    await expect(pending).to_be_visible()
    await shoot(admin, "invitations-phone")
    await pending.locator("text=Re-issue link").click()
    await expect(admin.locator(".notice.ok")).to_contain_text("previous one no longer works")
    new_link = (await admin.locator("#invitation-link").text_content() or "").strip()
    assert new_link != phone_link
    await phone.goto(phone_link)
    await expect(phone.locator("h1")).to_have_text("This invitation link does not work")
    await phone.goto(new_link)
    await expect(phone.locator("#email")).to_have_value("phone.colleague@alpha.example.com")
    await phone_context.close()
    await admin_context.close()
