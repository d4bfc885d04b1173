"""The portal's layout measured in a real browser at 1280 and 390 px: what fits, what scrolls, what is readable.

An organization with channels, priced calls from two users and a trail of changes; its admin opens every
page of the menu. At 1280 px the dashboard's and the audit log's tables fit their boxes and the menu is
one line of two dropdowns; at 390 px no page is wider than the window, wide tables scroll inside their
own box and say so, chart labels are at least 11 px and the opened menu is one sheet under the header,
which folds away again when the window is widened. Screenshots go to docs/screenshots/layout-*.png.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, FloatRect, Page, expect

from tests.support.browser import PHONE, SCREENSHOTS, WIDE, shoot, sign_in
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MODEL = "gpt-layout-measurements"
# Every page the menu reaches for an admin (the account page is the email beside "Sign out").
MENU_PAGES = {
    "dashboard": "/portal/",
    "usage": "/portal/usage",
    "keys": "/portal/tokens",
    "channels": "/portal/channels",
    "prices": "/portal/prices",
    "users": "/portal/users",
    "groups": "/portal/groups",
    "audit": "/portal/audit",
    "jobs": "/portal/jobs",
    "settings": "/portal/settings",
    "webhooks": "/portal/webhooks",
    "memories": "/portal/memories",
    "knowledge": "/portal/knowledge",
    "conversations": "/portal/conversations",
    "chat": "/portal/chat",
    "account": "/portal/account",
}

PAGE_FITS = "document.documentElement.scrollWidth <= window.innerWidth"
# Visible elements reaching past either side of the window; what is inside a table's scrolling box is
# that box's business (the box itself is checked).
OUTSIDE_THE_WINDOW = """() => {
  const found = [];
  for (const element of document.querySelectorAll("body *")) {
    if (element.parentElement && element.parentElement.closest(".table-wrap")) continue;
    const box = element.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.left < -1 || box.right > window.innerWidth + 1) {
      const name = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "");
      found.push(`${name} ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
  return found;
}"""
# Each table's scrolling box: how much wider its content is, whether it says so, and where it sits.
TABLE_BOXES = """() => Array.from(document.querySelectorAll("main .table-wrap")).map((wrap) => {
  const box = wrap.getBoundingClientRect();
  return {
    id: (wrap.querySelector("table") || {}).id || "",
    overflow: wrap.scrollWidth - wrap.clientWidth,
    marked: wrap.hasAttribute("data-scrolls"),
    hint: getComputedStyle(wrap, "::before").content,
    left: box.left, right: box.right,
    lastCells: Array.from(wrap.querySelectorAll("tr > :last-child")).map((cell) => cell.getBoundingClientRect().right),
  };
})"""
# The size chart text is drawn at, in screen pixels: the computed size times the SVG's scale.
CHART_TEXT = """() => Array.from(document.querySelectorAll("svg.chart text"))
  .filter((text) => getComputedStyle(text).display !== "none")
  .map((text) => {
    const box = text.getBoundingClientRect();
    return {size: parseFloat(getComputedStyle(text).fontSize) * text.getScreenCTM().a,
            left: box.left, right: box.right, top: box.top - text.closest("svg").getBoundingClientRect().top,
            chart: text.closest("svg").getAttribute("aria-label")};
  })"""


def box_of(found: FloatRect | None) -> FloatRect:
    assert found is not None
    return found


def within(inner: FloatRect, outer: FloatRect) -> bool:
    """Whether the box `inner` lies inside `outer` (to half a pixel)."""
    return (
        outer["x"] - 0.5 <= inner["x"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and outer["y"] - 0.5 <= inner["y"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


async def prepare_organization(lyss: RunningLyss, tenant: TenantRows, upstream: MockUpstream) -> None:
    """Channels, a high price, calls from two users' keys, and changes of several kinds for the audit trail."""
    admin = lyss.headers_for(tenant.admin)
    async with httpx.AsyncClient(base_url=lyss.url) as client:

        async def call(method: str, path: str, user: Any = None, **body: Any) -> dict[str, Any]:
            response = await client.request(
                method, path, json=body or None, headers=lyss.headers_for(user) if user else admin
            )
            assert response.status_code < 300, response.text
            return dict(response.json()) if response.content else {}

        channel = await call(
            "POST",
            "/api/channels",
            name="Primary provider with a long name",
            keys=["sk-up"],
            type="openai-compatible",
            models=[MODEL],
            base_url=upstream.base_url("layout"),
        )
        await call("PATCH", f"/api/channels/{channel['id']}", priority=5, weight=3)
        spare = await call(
            "POST",
            "/api/channels",
            name="spare",
            type="openai-compatible",
            keys=["sk-spare"],
            models=["spare-model"],
            base_url=upstream.base_url("spare"),
        )
        await call("DELETE", f"/api/channels/{spare['id']}")
        await call("PATCH", f"/api/groups/{tenant.group.id}", name="platform engineering")
        await call(
            "POST", "/api/auth/invitations", email="new.colleague.with.a.long.address@example.com", role="end_user"
        )
        # Large enough that costs run to thousands: the widest the dashboard's cost column gets.
        await call("PUT", f"/api/model-prices/{MODEL}", prompt_price=400_000_000_000, completion_price=900_000_000_000)
        keys = []
        for user in (tenant.admin, tenant.user):
            created = await call("POST", "/api/tokens", user=user, name=f"key of {user.email}")
            keys.append(created["key"])
        for key in keys:
            for _ in range(2):
                answer = await client.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "measure me"}]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert answer.status_code == 200, answer.text


async def wait_for_usage(page: Page, url: str, requests: int) -> None:
    """The dashboard once the usage flusher has written the calls (it runs every half second)."""
    for _ in range(40):
        await page.goto(f"{url}/portal/")
        if (await page.locator("#stat-requests").text_content() or "").strip() == str(requests):
            return
        await page.wait_for_timeout(250)
    raise AssertionError("the calls never reached the dashboard")


async def assert_tables_fit(page: Page, name: str) -> None:
    for table in await page.evaluate(TABLE_BOXES):
        assert table["overflow"] <= 0, f"{name}: {table['id']} is {table['overflow']} px wider than its box"
        assert all(right <= table["right"] + 0.5 for right in table["lastCells"]), f"{name}: {table['id']} clips"


async def test_every_page_fits_1280_and_390_px_with_readable_charts_and_a_tidy_menu(
    lyss: RunningLyss, browser: Browser, tenant_a: TenantRows, upstream: MockUpstream
) -> None:
    upstream.behave("layout", words=6)
    await prepare_organization(lyss, tenant_a, upstream)
    wide = await browser.new_context(viewport=WIDE)
    page = await wide.new_page()
    await sign_in(page, lyss.url, tenant_a, tenant_a.admin.email)
    await wait_for_usage(page, lyss.url, 4)

    # 1280 px: the dashboard's tables (the cost column included) fit their cards.
    await expect(page.locator("#top-users")).to_contain_text(tenant_a.user.email)
    assert await page.locator("main table").count() == 2
    await assert_tables_fit(page, "dashboard")
    for card in await page.locator("main .card").all():
        inner = box_of(await card.bounding_box())
        for table in await card.locator("table").all():
            table_box = box_of(await table.bounding_box())
            assert table_box["x"] + table_box["width"] <= inner["x"] + inner["width"]
    await shoot(page, "layout-dashboard")

    # The menu is one line: the brand, two dropdowns and the account, side by side.
    header = box_of(await page.locator("header.top").bounding_box())
    assert header["height"] < 64
    middles = []
    for item in (
        "header .brand",
        "summary:has-text('Use')",
        "summary:has-text('Manage')",
        ".signout .who",
        ".signout button",
    ):
        item_box = box_of(await page.locator(item).bounding_box())
        middles.append(item_box["y"] + item_box["height"] / 2)
    assert max(middles) - min(middles) < 6, middles
    manage = page.locator("details.menu-group", has=page.locator("summary", has_text="Manage"))
    use = page.locator("details.menu-group", has=page.locator("summary", has_text="Use"))
    await expect(manage.locator("ul")).to_be_hidden()
    await manage.locator("summary").click()
    await expect(manage.locator("a")).to_have_text(
        ["Channels", "Prices", "Users", "Groups", "Settings", "Webhooks", "Audit log", "Jobs"]
    )
    dropdown = box_of(await manage.locator("ul").bounding_box())
    assert dropdown["x"] + dropdown["width"] <= WIDE["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "layout-menu-open.png")
    await use.locator("summary").click()  # one dropdown at a time
    await expect(manage.locator("ul")).to_be_hidden()
    await expect(use.locator("a")).to_have_text(
        ["Dashboard", "Chat", "Conversations", "Memories", "Knowledge", "Usage", "API keys"]
    )
    await page.keyboard.press("Escape")
    await expect(use.locator("ul")).to_be_hidden()
    await expect(use.locator("summary")).to_be_focused()
    await page.locator("h1").click()
    await manage.locator("summary").click()
    await manage.locator("a", has_text="Audit log").click()

    # The audit log fits too, with names and readable changes and times to the second.
    await expect(page).to_have_url(re.compile(r"/portal/audit$"))
    await expect(manage.locator("summary")).to_have_class("current")
    await expect(manage.locator("a[aria-current=page]")).to_have_text("Audit log")
    audit = page.locator("#audit-table")
    await expect(audit.locator("tr", has_text="group.updated")).to_contain_text("engineering → platform engineering")
    await expect(audit.locator("tr", has_text="channel.deleted")).to_contain_text("(deleted)")
    await expect(audit.locator("tr", has_text="token.created").first).to_contain_text(f"owner: {tenant_a.user.email}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", await audit.locator(".time").first.inner_text())
    await assert_tables_fit(page, "audit")
    await shoot(page, "layout-audit")

    # 390 px: no page of the menu is wider than the window; a wide table scrolls in its box and says so.
    phone = await browser.new_context(viewport=PHONE, storage_state=await wide.storage_state())
    small = await phone.new_page()
    scrolling_tables = 0
    for name, path in MENU_PAGES.items():
        response = await small.goto(f"{lyss.url}{path}")
        assert response is not None
        assert response.status == 200, name
        assert await small.evaluate(PAGE_FITS), f"{name} is wider than the window"
        assert await small.evaluate(OUTSIDE_THE_WINDOW) == [], name
        for table in await small.evaluate(TABLE_BOXES):
            assert 0 <= table["left"] <= table["right"] <= PHONE["width"], f"{name}: {table['id']}"
            assert table["marked"] == (table["overflow"] > 1), f"{name}: {table['id']}"
            if table["marked"]:
                scrolling_tables += 1
                assert "Scroll sideways" in table["hint"], f"{name}: {table['id']}"
    assert scrolling_tables >= 2  # the audit log's and the usage log's, at least

    # The charts' labels are drawn at 11 px or more, and those under the bars (not the scale) do not overlap.
    await small.goto(f"{lyss.url}/portal/")
    labels = await small.evaluate(CHART_TEXT)
    assert {label["chart"] for label in labels} == {"Requests (errors in red)", "Tokens", "Cost (USD)"}
    assert min(label["size"] for label in labels) >= 11, labels
    for chart in {label["chart"] for label in labels}:
        ticks = sorted(
            (label for label in labels if label["chart"] == chart and label["top"] > 100), key=lambda t: t["left"]
        )
        assert all(left["right"] <= right["left"] for left, right in itertools.pairwise(ticks)), chart
    await shoot(small, "layout-dashboard-phone")
    await small.goto(f"{lyss.url}/portal/audit")
    await shoot(small, "layout-audit-phone")

    # The opened menu is one sheet under the header: both groups unfolded, the account line inside it.
    menu_panel = small.locator(".menu-panel")
    await expect(menu_panel).to_be_hidden()
    await small.click("summary:has-text('Menu')")
    await expect(menu_panel).to_be_visible()
    await expect(small.locator("nav[aria-label=Main] a")).to_have_count(15)
    for link in await small.locator("nav[aria-label=Main] a").all():
        await expect(link).to_be_visible()
    sheet = box_of(await menu_panel.bounding_box())
    top = box_of(await small.locator("header.top").bounding_box())
    assert within(sheet, {"x": 0, "y": 0, "width": PHONE["width"], "height": PHONE["height"]})
    assert abs(sheet["y"] - (top["y"] + top["height"])) < 2
    for part in (".signout .who", ".signout button"):
        assert within(box_of(await small.locator(part).bounding_box()), sheet), part
    assert await small.evaluate(OUTSIDE_THE_WINDOW) == []
    await small.screenshot(path=SCREENSHOTS / "layout-menu-open-phone.png")

    # Widened again, the menu is the one-line bar with its dropdowns closed; narrowed, it is folded.
    await small.set_viewport_size(WIDE)
    await expect(small.locator("details.menu-group[open]")).to_have_count(0)
    await expect(small.locator("summary:has-text('Menu')")).to_be_hidden()
    assert box_of(await small.locator("header.top").bounding_box())["height"] < 64
    await small.set_viewport_size(PHONE)
    await expect(menu_panel).to_be_hidden()
    await phone.close()

    # Without script, a wide window still shows the bar, and its dropdowns open.
    plain = await browser.new_context(
        viewport=WIDE, java_script_enabled=False, storage_state=await wide.storage_state()
    )
    bare = await plain.new_page()
    await bare.goto(f"{lyss.url}/portal/")
    await expect(bare.locator("details.menu")).not_to_have_attribute("open", "")
    await bare.click("summary:has-text('Manage')")
    await expect(bare.locator("nav[aria-label=Main] a", has_text="Audit log")).to_be_visible()
    await expect(bare.locator(".signout button")).to_be_visible()
    await plain.close()
    await wide.close()
