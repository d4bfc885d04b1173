"""A newcomer's first hour in a real browser: an unknown address, the dashboard of a fresh organization
with the demo's echo channel and key, and a new key's page with examples ready to paste.

The run saves screenshots (wide and phone-sized) into docs/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.admin import add_demo_gateway
from db.session import tenant_session
from tests.support.browser import PHONE, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_a_newcomer_finds_the_way_from_a_wrong_address_to_a_first_call(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        await add_demo_gateway(session, tenant_a.id, tenant_a.admin, SecretBox(lyss.settings.encryption_keyring))
        await session.commit()
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()

    # A mistyped address is a page of the portal, with the way back.
    response = await page.goto(f"{lyss.url}/portal/nope")
    assert response is not None
    assert response.status == 404
    await expect(page.locator("h1")).to_have_text("Page not found")
    await shoot(page, "not-found")
    await page.click("text=Sign in")
    await expect(page).to_have_url(re.compile(r"/portal/login$"))

    # The dashboard of an organization without calls says what is there and what to do next.
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    start = page.locator("#getting-started")
    await expect(start).to_contain_text("the demo channel echo")
    await expect(start).to_contain_text("the API key demo")
    await expect(start.locator('a[href="/portal/chat"]')).to_be_visible()
    await shoot(page, "dashboard-empty")
    await page.set_viewport_size(PHONE)
    await page.reload()  # as a phone loads it: the menu folded
    await shoot(page, "dashboard-empty-phone")
    await page.set_viewport_size(WIDE)
    await page.reload()

    # Its "issue a key" step leads to a key whose page has the examples, the key filled in.
    await start.locator('a[href="/portal/tokens/new"]').click()
    await page.fill("#name", "first program")
    await page.click("main button[type=submit]")
    key = (await page.locator("#new-key").text_content() or "").strip()
    assert key.startswith("sk-")
    await expect(page.locator("#snippet-curl")).to_contain_text(f"Bearer {key}")
    await expect(page.locator("#snippet-openai")).to_contain_text(f'api_key="{key}"')
    await expect(page.locator("#snippet-anthropic")).to_contain_text(f'api_key="{key}"')
    await expect(page.locator("#snippet-openai")).to_contain_text('model="echo"')
    await shoot(page, "key-snippets")
    await page.set_viewport_size(PHONE)
    await expect(page.locator(".menu-panel")).to_be_hidden()  # narrowing the window folds the menu
    await shoot(page, "key-snippets-phone")

    # Back to the list: a form's confirmation shows once, and reloading a POST-only address lands on a page.
    await page.set_viewport_size(WIDE)
    await page.click("text=Done")
    row = page.locator("tr", has_text="first program")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("text=Revoke").click()
    await expect(page.locator(".notice.ok")).to_have_text("The API key is revoked.")
    await page.reload()
    await expect(page.locator(".notice.ok")).to_have_count(0)
    await page.goto(f"{lyss.url}/portal/logout")
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await context.close()
