"""Channels at scale in a real browser: the list searched and filtered, every channel tested by one job, the
form's scope fields and "Fetch models" (the script asking the API), a clone, and an API key's form with its
channels and models ticked and its quota in money.

The run saves screenshots (wide and phone-sized) into docs/screenshots/.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.jobs import running_worker
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_manages_many_channels_and_a_keys_choices(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("scale-new", models=["gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"])
    upstream.behave("scale-refusing", status=401)
    headers = lyss.headers_for(tenant_a.admin)
    async with httpx.AsyncClient(base_url=lyss.url, headers=headers) as api:
        for name, kind, models, extra in [
            ("OpenAI primary", "openai-compatible", ["gpt-4o", "gpt-4o-mini"], {}),
            ("Claude", "anthropic", ["claude-sonnet"], {}),
            (
                "Engineering pool",
                "openai-compatible",
                ["gpt-4o"],
                {"scope": "group", "group_id": str(tenant_a.group.id)},
            ),
        ]:
            body = {"name": name, "type": kind, "models": models, "keys": [f"sk-{name}"], **extra}
            response = await api.post(
                "/api/channels", json=body | {"base_url": upstream.base_url(f"scale-{len(name)}")}
            )
            assert response.status_code == 201, response.text

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)

    # Every channel tested at once by a job; the list follows it to the end.
    await page.goto(f"{lyss.url}/portal/channels")
    async with running_worker(lyss.settings):
        await page.click("text=Test all channels")
        await expect(page).to_have_url(re.compile(r"/portal/channels\?test_job="))
        await expect(page.locator("#test-all-status")).to_contain_text("Tested 3 channels: 3 passed", timeout=20000)
    await expect(page.locator("#test-all-status a")).to_have_text("Open the job")
    await expect(page.locator(".test-result .badge.ok")).to_have_count(3)

    # Search and filters live in the address: a reload keeps them.
    await page.fill("#q", "gpt-4o")
    await page.select_option("#scope", "tenant")
    await page.click("text=Filter")
    await expect(page).to_have_url(re.compile(r"q=gpt-4o.*scope=tenant"))
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.reload()
    await expect(page.locator("#q")).to_have_value("gpt-4o")
    await expect(page.locator("tbody tr")).to_contain_text("OpenAI primary")
    await page.select_option("#scope", "")
    await page.click("text=Filter")
    await expect(page.locator("tbody tr")).to_have_count(2)
    await shoot_both_widths(page, "channels-filtered")

    # The form: scope shows only the field it needs; Fetch models asks the provider without leaving the page.
    await page.goto(f"{lyss.url}/portal/channels/new")
    await expect(page.locator("#group_id")).to_be_hidden()
    await page.select_option("#scope", "group")
    await expect(page.locator("#group_id")).to_be_visible()
    await expect(page.locator("#owner_id")).to_be_hidden()
    await page.select_option("#group_id", str(tenant_a.group.id))
    await page.select_option("#type", "openai-compatible")
    await page.fill("#name", "Engineering new")
    await page.fill("#keys", "sk-typed-in-browser")
    await page.fill("#base_url", upstream.base_url("scale-refusing"))
    await page.click("button[data-fetch-models]")
    await expect(page.locator("#models-error")).to_have_text(
        "The provider refused the API key (HTTP 401); check the key."
    )
    await page.fill("#base_url", upstream.base_url("scale-new"))
    await page.click("button[data-fetch-models]")
    await expect(page.locator("#models")).to_have_value("gpt-4.1\ngpt-4.1-mini\ntext-embedding-3-small")
    await expect(page.locator("#models-error")).to_be_hidden()
    await expect(page).to_have_url(re.compile(r"/portal/channels/new$"))
    assert upstream.headers_seen[-1]["Authorization"] == "Bearer sk-typed-in-browser"
    await page.fill("#models", "gpt-4.1\ngpt-4.1-mini")  # the admin edits the list
    await shoot_both_widths(page, "channel-form-scope-models")
    await page.click("text=Add channel")
    await expect(page).to_have_url(re.compile(r"/portal/channels$"))
    row = page.locator("tr", has_text="Engineering new")
    await expect(row).to_contain_text("group")
    await expect(row).to_contain_text("gpt-4.1, gpt-4.1-mini")

    # A clone: the form filled from the channel, its keys kept unless new ones are typed.
    await page.locator("tr", has_text="OpenAI primary").locator("text=Clone").click()
    await expect(page.locator("h1")).to_have_text("Clone a channel")
    await expect(page.locator("#name")).to_have_value("OpenAI primary (copy)")
    await expect(page.locator("#models")).to_have_value("gpt-4o\ngpt-4o-mini")
    await expect(page.locator("main")).to_contain_text(
        "Leave empty to keep the keys of the channel this is cloned from"
    )
    await page.click("text=Add channel")
    await expect(page.locator("tr", has_text="OpenAI primary (copy)")).to_have_count(1)

    # An API key: channels and models ticked from lists, the quota in money.
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await page.fill("#name", "scoped key")
    await page.fill("#quota", "5")
    await page.locator("label.choice", has_text="OpenAI primary (copy)").locator("input").check()
    await page.check("input[name=allowed_models][value='gpt-4o-mini']")
    await page.click("text=Issue key")
    await expect(page.locator("#new-key")).to_contain_text("sk-lyss-")
    await page.goto(f"{lyss.url}/portal/tokens")
    await expect(page.locator("tr", has_text="scoped key")).to_contain_text("$5.00")
    await page.locator("tr", has_text="scoped key").locator("a", has_text="scoped key").click()
    await expect(page.locator("#quota")).to_have_value("$5.00")
    await expect(page.locator("input[name=allowed_models][value='gpt-4o-mini']")).to_be_checked()
    await expect(page.locator("input[name=allowed_models][value='gpt-4o']")).not_to_be_checked()
    await shoot_both_widths(page, "key-form-choices")
    await context.close()
