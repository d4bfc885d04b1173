"""Budgets in a real browser: an admin limits a person on their user page (a wrong amount is said next to its
field), sets a group's budget and the default for new users; the person sees what their keys may still spend
and their own unlimited key is held to the policy. Screenshots at 1280 and 390 px: user-budget, group-budget,
keys-budget (docs/screenshots).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import WIDE, shoot_both_widths, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def test_an_admin_sets_budgets_in_the_portal_and_the_person_sees_and_keeps_to_them(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        admin = lyss.headers_for(tenant_a.admin)
        channel = {"name": "budgets-e2e", "type": "openai-compatible", "keys": ["k"], "models": ["gpt-test", "gpt-big"]}
        response = await api.post(
            "/api/channels", json=channel | {"base_url": upstream.base_url("budgets-e2e")}, headers=admin
        )
        assert response.status_code == 201, response.text
        price = {"prompt_price": 0, "completion_price": 1_000_000}
        assert (await api.put("/api/model-prices/gpt-test", json=price, headers=admin)).status_code == 200

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await expect(page.locator("h1")).to_have_text("Organization usage")

    # The person's page: a wrong amount, then a monthly budget with one model allowed.
    await page.goto(f"{lyss.url}/portal/users/{tenant_a.user.id}")
    budget = page.locator("#budget")
    await expect(budget.locator("#budget-use")).to_contain_text("no budget set")
    await budget.locator("#quota").fill("lots")
    await budget.get_by_role("button", name="Save budget and policy").click()
    await expect(page.locator("#quota-error")).to_contain_text("is not an amount of money")
    await page.locator("#budget #quota").fill("0.00005")
    await page.locator("#budget #budget_period").select_option("monthly")
    await page.locator("#budget #rpm_limit").fill("30")
    await page.locator('#budget input[name="allowed_models"][value="gpt-test"]').check()
    await page.locator("#budget").get_by_role("button", name="Save budget and policy").click()
    await expect(page.locator(".notice.ok")).to_contain_text("The budget and policy are saved")
    await expect(page.locator("#budget-use")).to_contain_text("Used $0.00 of $0.00005: $0.00005 left this month.")
    await shoot_both_widths(page, "user-budget")

    # The group's budget, shared by its members: the person joins it.
    await page.goto(f"{lyss.url}/portal/groups/{tenant_a.group.id}")
    await page.select_option("#user_id", str(tenant_a.user.id))
    await page.get_by_role("button", name="Add member").click()
    await expect(page.locator("#members-table")).to_contain_text(tenant_a.user.email)
    await page.locator("#budget #quota").fill("25")
    await page.locator("#budget #budget_period").select_option("weekly")
    await page.locator("#budget").get_by_role("button", name="Save budget and policy").click()
    await expect(page.locator("#budget-use")).to_contain_text("Used $0.00 of $25.00: $25.00 left this week.")
    await shoot_both_widths(page, "group-budget")
    await context.close()

    # The person issues their own key with no limits of its own, and calls.
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.user.email)
    await page.goto(f"{lyss.url}/portal/tokens/new")
    await page.fill("#name", "my own")
    await page.click("main button[type=submit]")
    key = (await page.locator("#new-key").text_content() or "").strip()
    assert key.startswith("sk-"), key
    async with httpx.AsyncClient(base_url=f"{lyss.url}/v1", headers={"Authorization": f"Bearer {key}"}) as v1:
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        assert (await v1.post("/chat/completions", json=body)).status_code == 200
        big = await v1.post("/chat/completions", json=body | {"model": "gpt-big"})
        assert big.status_code == 403
        assert "The policy of your account does not allow the model 'gpt-big'" in big.json()["error"]["message"]
        # 45 credits left: a call that could cost 46 is refused, saying what is left.
        over = await v1.post("/chat/completions", json=body | {"max_tokens": 46})
        assert over.status_code == 429
        assert "has $0.000045 left" in over.json()["error"]["message"]

    # The call's 5 credits came off both budgets. The page reads PostgreSQL's count, which the usage flusher
    # brings up to date every half second: reload until it has.
    mine = page.locator("#your-budget")
    for _ in range(20):
        await page.goto(f"{lyss.url}/portal/tokens")
        if "$0.000045 left" in (await mine.text_content() or ""):
            break
        await asyncio.sleep(0.25)
    await expect(mine).to_contain_text("You: $0.000045 left of $0.00005 this month, 30 requests a minute")
    await expect(mine).to_contain_text("Your group engineering: $24.999995 left of $25.00 this week.")
    await shoot_both_widths(page, "keys-budget")
    await context.close()
