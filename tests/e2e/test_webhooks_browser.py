"""Webhooks in a real browser, against `lyss serve` with its worker: an admin adds an endpoint (a receiver on
loopback), copies the secret shown once, sends a test that fails once and then arrives, reads both attempts in
the delivery log, and removes the endpoint.

Saves `webhooks*.png`, `webhook-form-refused*.png` and `webhook-deliveries*.png` (1280 and 390 px wide) into
docs/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect

from db.bootstrap import DatabaseUrls
from tests.support.browser import WIDE, open_from_menu, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.tenants import TenantRows
from tests.support.webhook_receiver import webhook_receiver

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def lyss_with_worker(
    database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningLyss]:
    """`lyss serve` running its own worker, retrying failed deliveries within a second."""
    log_dir = tmp_path_factory.mktemp("lyss-webhooks")
    with serve_lyss(
        database, redis_url, log_dir, LYSS_EMBEDDED_WORKER="true", LYSS_WEBHOOK_RETRY_SECONDS="0.5"
    ) as running:
        yield running


async def test_an_admin_adds_a_webhook_tests_it_and_reads_its_delivery_log(
    lyss_with_worker: RunningLyss, browser: Browser, tenant_a: TenantRows
) -> None:
    url = lyss_with_worker.url
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    async with webhook_receiver() as receiver:
        await open_from_menu(page, "Webhooks")
        await expect(page.locator("h1")).to_have_text("Webhooks")
        await page.click("text=Add a webhook")

        # Nothing filled in, then a wrong address: each message next to its field, nothing saved.
        await page.click("main button[type=submit]")
        await expect(page.locator("#url-error")).to_have_text("This field is required.")
        await expect(page.locator("#events-error")).to_have_text("Enter at least one.")
        await page.fill("#url", "ftp://hooks.example.com/")
        await page.check("input[value='channel.auto_disabled']")
        await page.check("input[value='budget.threshold']")
        await page.click("main button[type=submit]")
        await expect(page.locator("#url-error")).to_contain_text("http:// or https://")
        await expect(page.locator("#url")).to_have_value("ftp://hooks.example.com/")
        await expect(page.locator("input[value='budget.threshold']")).to_be_checked()
        await shoot_both_widths(page, "webhook-form-refused")

        await page.fill("#url", receiver.url)
        await page.fill("#description", "On-call pager")
        await page.click("main button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Webhook added")
        secret = (await page.locator("#webhook-secret").text_content() or "").strip()
        assert secret.startswith("whsec_")

        await page.click("text=Done")
        row = page.locator("#webhooks-table tbody tr", has_text=receiver.url)
        await expect(row).to_contain_text("On-call pager")
        await expect(row).to_contain_text("budget.threshold")
        assert secret not in await page.content()
        await shoot_both_widths(page, "webhooks")

        # The receiver refuses the first attempt; the retry arrives, signed with the secret shown once.
        receiver.statuses = [500]
        await row.locator("text=Send a test").click()
        await expect(page.locator("h1")).to_have_text("Delivery log")
        await expect(page.locator(".notice")).to_contain_text("A test event is on its way")
        await receiver.wait_for(2)
        for _ in range(100):
            await page.reload()
            if await page.locator("tr.delivery").count() == 2:
                break
        rows = page.locator("tr.delivery")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("delivered")
        await expect(rows.nth(1)).to_contain_text("The receiver answered HTTP 500.")
        await shoot_both_widths(page, "webhook-deliveries")
        assert receiver.answered == [500, 200]
        assert all(item.signed_with(secret) for item in receiver.received)
        assert receiver.events()[0]["type"] == "webhook.test"

        await page.click("text=All webhooks")
        await page.locator("#webhooks-table tbody tr", has_text=receiver.url).locator("text=Remove").click()
        await expect(page.locator(".notice")).to_have_text("The webhook is removed.")
        await expect(page.locator("#webhooks-table tbody tr", has_text=receiver.url)).to_have_count(0)
        assert re.search(r"/portal/webhooks$", page.url)
    await context.close()
