"""Every call on the record in a real browser: refused and failed calls stand out in the usage log, and a call's
page says who made it, why it failed and which channels were tried.

The run saves screenshots (wide and phone-sized) into docs/screenshots/.
"""

from __future__ import annotations

import datetime
import re

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.clients import AuthHeaders, Client
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows
from tests.support.usage_rows import channels_and_key, one_of_each, store

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_finds_why_a_call_failed_from_the_usage_log(
    lyss: RunningLyss,
    browser: Browser,
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    made = await channels_and_key(client, upstream, tenant_a, auth_headers)
    rows = one_of_each(tenant_a, made)
    now = datetime.datetime.now(datetime.UTC)
    for age, row in enumerate(rows):  # the list's order is the rows' order, newest first
        row.created_at = now - datetime.timedelta(seconds=age)
    failed_over = rows[4]
    failed_over.request_id = "req-7f3a9c2e41b84d0f"
    await store(session_maker, tenant_a, rows)
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("#stat-errors-count")).to_have_text("6 of 8")

    await page.goto(f"{lyss.url}/portal/usage")
    table = page.locator("#usage-table tbody tr")
    await expect(table).to_have_count(8)
    await expect(page.locator("#usage-table tbody tr.failed")).to_have_count(6)
    await expect(table.nth(2).locator("td").nth(1)).to_contain_text("429")
    await shoot_both_widths(page, "usage-log-refused")

    # Only the refused calls, through the outcome filter.
    await page.select_option("#outcome", "refused")
    await page.click("text=Filter")
    await expect(page).to_have_url(re.compile(r"outcome=refused"))
    await expect(page.locator("#usage-table tbody tr")).to_have_count(4)
    await page.click("text=Clear")

    # The failed-over call's page: the reason, the message the client got, each channel tried.
    await page.locator(f'a[href="/portal/usage/{failed_over.id}"]').click()
    await expect(page.locator("#call-status")).to_have_text("502")
    await expect(page.locator("#call-outcome")).to_contain_text("Every channel tried failed")
    await expect(page.locator("#call-error")).to_have_text("Every channel failed.")
    await expect(page.locator("#call-key")).to_have_text("billing app")
    await expect(page.locator("#call-time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$"))
    attempts = page.locator("#call-attempts tbody tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("primary")
    await expect(attempts.nth(0)).to_contain_text("bad gateway from primary")
    await expect(attempts.nth(1)).to_contain_text("backup")
    await shoot_both_widths(page, "usage-call")

    # A budget refusal says whose budget it was.
    await page.goto(f"{lyss.url}/portal/usage/{rows[2].id}")
    await expect(page.locator("#call-outcome")).to_contain_text("the limit set on the group Research")
    await context.close()
