"""The portal in a real browser: Debian's chromium driven by Playwright against a running `lyss serve`.

An admin enrols in MFA and signs in with it, adds a channel that points at the mock provider, tests it,
issues a key, calls `/v1/chat/completions` with the official OpenAI SDK and finds the call in the usage log
and on the dashboard; an end user cannot reach admin pages or anyone else's data. The run saves screenshots
of the main pages (wide and phone-sized) into docs/screenshots/.
"""

from __future__ import annotations

import datetime
import re

import openai
import pyotp
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import PHONE, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_admin_runs_the_organization_from_the_portal(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("portal-e2e", words=4)
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()

    # An unknown page sends a visitor to sign in; a wrong password says so and keeps the email.
    await page.goto(f"{lyss.url}/portal/channels")
    await expect(page).to_have_url(re.compile(r"/portal/login\?next=%2Fportal%2Fchannels"))
    await shoot(page, "sign-in")
    await page.fill("#tenant", tenant_a.slug)
    await page.fill("#email", tenant_a.admin.email)
    await page.fill("#password", "not the password")
    await page.click("button[type=submit]")
    await expect(page.locator(".notice.error")).to_contain_text("Invalid")
    await expect(page.locator("#email")).to_have_value(tenant_a.admin.email)

    # Enrol in MFA from the account page, with a code read from the enrolment page's key.
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")
    await page.goto(f"{lyss.url}/portal/account")
    await page.click("text=Set up two-factor authentication")
    await expect(page.locator(".qr svg")).to_be_visible()
    await shoot(page, "mfa-enrolment")
    totp = pyotp.TOTP((await page.locator("#mfa-secret").text_content() or "").strip())
    now = datetime.datetime.now(datetime.UTC)
    # The previous 30 s step's code (accepted), so that sign-in below can use the current one.
    await page.fill("#code", totp.at(now - datetime.timedelta(seconds=30)))
    await page.click("text=Turn on")
    await expect(page.locator("h1")).to_have_text("Two-factor authentication is on")
    codes = (await page.locator("#recovery-codes").text_content() or "").split()
    assert len(codes) == 10

    # Sign out, then sign in again: password, then the TOTP step.
    await page.click("text=Sign out")
    await expect(page).to_have_url(re.compile(r"/portal/login$"))
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page).to_have_url(re.compile(r"/portal/login/mfa"))
    await page.fill("#code", totp.now())
    await page.click("text=Verify")
    await expect(page.locator("h1")).to_have_text("Organization usage")

    # A channel pointing at the mock provider; picking a type fills its base URL, which we replace.
    await page.goto(f"{lyss.url}/portal/channels/new")
    await page.select_option("#type", "openai")
    await expect(page.locator("#base_url")).to_have_value("https://api.openai.com/v1")
    await page.click("main button[type=submit]")
    await expect(page.locator("#name-error")).to_have_text("This field is required.")
    await page.fill("#name", "Mock provider")
    await page.fill("#base_url", upstream.base_url("portal-e2e"))
    await page.fill("#keys", "sk-upstream-test")
    await page.fill("#models", "gpt-e2e")
    await page.click("main button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/portal/channels$"))
    row = page.locator("tr", has_text="Mock provider")
    await row.locator("text=Test").click()
    await expect(row.locator(".test-result .badge")).to_have_text("ok")
    assert upstream.calls["portal-e2e"] == 1
    await shoot(page, "channels")

    # A key, shown once, then a real call with the official SDK.
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await page.fill("#name", "e2e key")
    await page.check("input[name=allowed_models][value=gpt-e2e]")
    await page.click("main button[type=submit]")
    key = (await page.locator("#new-key").text_content() or "").strip()
    assert key.startswith("sk-lyss-")
    await shoot(page, "key-issued")
    client = openai.AsyncOpenAI(base_url=f"{lyss.url}/v1", api_key=key, max_retries=0)
    completion = await client.chat.completions.create(model="gpt-e2e", messages=[{"role": "user", "content": "hello"}])
    await client.close()
    assert completion.choices[0].message.content
    await page.goto(f"{lyss.url}/portal/tokens")
    await expect(page.locator("tr", has_text="e2e key")).not_to_contain_text(key)
    await shoot(page, "keys")

    # The call in the usage log (written a moment later by the usage flusher) and on the dashboard.
    usage_row = page.locator("#usage-table tr", has_text="gpt-e2e")
    for _ in range(40):
        await page.goto(f"{lyss.url}/portal/usage")
        if await usage_row.count():
            break
        await page.wait_for_timeout(250)
    await expect(usage_row).to_contain_text("e2e key")
    await expect(usage_row).to_contain_text("Mock provider")
    await shoot(page, "usage")
    await page.goto(f"{lyss.url}/portal/")
    await expect(page.locator("#stat-requests")).to_have_text("1")
    await expect(page.locator("section", has_text="Top models")).to_contain_text("gpt-e2e")
    await expect(page.locator("section", has_text="Channel health")).to_contain_text("Mock provider")
    await shoot(page, "dashboard")

    # Every other page of the menu opens, fits 1280 px and is saved for the docs.
    for name in ("users", "groups", "jobs", "memories", "conversations", "audit", "settings"):
        response = await page.goto(f"{lyss.url}/portal/{name}")
        assert response is not None
        assert response.status == 200, name
        await expect(page.locator("main h1").first).to_be_visible()
        await shoot(page, name)

    # The same pages on a phone: the menu folds, nothing overflows.
    phone = await browser.new_context(viewport=PHONE, storage_state=await context.storage_state())
    small = await phone.new_page()
    for name, path in (
        ("dashboard", "/portal/"),
        ("channels", "/portal/channels"),
        ("usage", "/portal/usage"),
        ("users", "/portal/users"),
        ("settings", "/portal/settings"),
    ):
        await small.goto(f"{lyss.url}{path}")
        await shoot(small, f"{name}-phone")
    await expect(small.locator("nav[aria-label=Main]")).to_be_hidden()
    await small.click("summary")
    await expect(small.locator("nav[aria-label=Main]")).to_be_visible()
    await phone.close()
    await context.close()


async def test_an_end_user_sees_only_their_own_and_no_admin_page(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await expect(page.locator("h1")).to_have_text("Your usage")
    await expect(page.locator("nav[aria-label=Main]")).not_to_contain_text("Channels")
    response = await page.goto(f"{lyss.url}/portal/channels/new")
    assert response is not None
    assert response.status == 403
    await expect(page.locator("h1")).to_have_text("Not allowed")
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await expect(page.locator("#user_id")).to_have_count(0)  # no choosing another owner
    await page.fill("#name", "mine")
    await page.click("main button[type=submit]")
    await expect(page.locator("#new-key")).to_be_visible()
    await page.goto(f"{lyss.url}/portal/tokens")
    await expect(page.locator("tbody tr")).to_have_count(1)
    # Another tenant's admin's page is not reachable either: their session is not this one's.
    other = await browser.new_context(viewport=WIDE)
    other_page = await other.new_page()
    await sign_in(other_page, lyss.url, tenant_b, tenant_b.admin.email)
    await other_page.goto(f"{lyss.url}/portal/tokens")
    await expect(other_page.locator("body")).not_to_contain_text("mine")
    await other.close()
    await context.close()
