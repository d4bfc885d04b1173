"""Prompt caching in a real browser: an admin sets a model's cache-write price on the prices form (a wrong
amount is said next to its field), and a call whose provider read and wrote its prompt cache shows those
tokens on its usage page, billed at their prices. Screenshots at 1280 and 390 px go to
docs/screenshots/prices-cache-write(-phone).png and usage-call-cached(-phone).png.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.tenants.money import format_money
from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.clients import AuthHeaders, Client
from tests.support.commands import RunningLyss
from tests.support.gateway import add_channel, issue_key, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_prices_cache_writes_and_sees_a_cached_call_billed_by_them(
    lyss: RunningLyss,
    browser: Browser,
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(
        client, auth_headers(tenant_a.admin), upstream, "cache-e2e", kind="anthropic", models=["claude-e2e"]
    )
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    await page.goto(f"{lyss.url}/portal/prices?model=claude-e2e")
    await page.fill("#prompt_price", "1")
    await page.fill("#cached_prompt_price", "0.10")
    await page.fill("#cache_write_price", "a bit more")
    await page.fill("#completion_price", "2")
    await page.click("text=Save price")
    await expect(page.locator("#cache_write_price-error")).to_contain_text("is not an amount of money")
    await page.fill("#cache_write_price", "1.25")
    await page.click("text=Save price")
    row = page.locator("#price-claude-e2e")
    await expect(row).to_contain_text("$1.25 cache write")
    await expect(row).to_contain_text("$0.10 cached prompt")
    await shoot_both_widths(page, "prices-cache-write")

    # 100 plain prompt tokens at $1/M, 700 read from the cache at $0.10/M, 200 written at $1.25/M, 7 out at $2/M.
    upstream.behave(
        "cache-e2e",
        reported_usage={
            "input_tokens": 100,
            "cache_read_input_tokens": 700,
            "cache_creation_input_tokens": 200,
            "output_tokens": 7,
        },
    )
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    body = {"model": "claude-e2e", "max_tokens": 1000, "messages": [{"role": "user", "content": "hello"}]}
    answer = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert answer.status_code == 200, answer.text
    [call] = await usage_rows(session_maker, tenant_a, 1)
    assert call.cost == 100 + 70 + 250 + 14

    await page.goto(f"{lyss.url}/portal/usage/{call.id}")
    await expect(page.locator("#call-cache")).to_have_text(
        re.compile(r"700 read from the provider.s cache, 200 written to it")
    )
    await expect(page.locator("#call-cost")).to_contain_text(format_money(434))
    await shoot_both_widths(page, "usage-call-cached")
    await context.close()
