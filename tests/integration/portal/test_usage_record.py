"""Every call on the record: one call's details, refused and failed calls in the counts, and the usage CSV."""

from __future__ import annotations

import csv
import datetime
import html
import io
import re
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.provider import UsageLog
from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows
from tests.support.usage_rows import channels_and_key, one_of_each, store


def text_of(page: str) -> str:
    """A page's text with tags dropped and whitespace folded, as a reader sees it."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


async def test_one_call_shows_who_what_why_and_each_channel_tried_to_its_owner_and_admins_only(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    made = await channels_and_key(client, upstream, tenant_a, auth_headers)
    rows = one_of_each(tenant_a, made)
    failed_over, budget = rows[4], rows[2]
    failed_over.request_id = "req-failed-over"
    failed_over.created_at = datetime.datetime(2026, 11, 3, 9, 15, 2, 345678, tzinfo=datetime.UTC)
    theirs = UsageLog(user_id=tenant_a.user.id, endpoint="chat", model="gpt-test", cost=5)
    await store(session_maker, tenant_a, [*rows, theirs])

    api = await client.get(f"/api/usage/{failed_over.id}", headers=auth_headers(tenant_a.admin))
    assert api.status_code == 200, api.text
    call = api.json()
    assert (call["user_email"], call["token_name"], call["channel_name"]) == (
        tenant_a.admin.email,
        "billing app",
        None,
    )
    assert (call["status_code"], call["outcome"], call["error"]) == (502, "upstream_error", "Every channel failed.")
    assert [(a["channel"], a["status"], a["latency_ms"], a["error"]) for a in call["attempts"]] == [
        ("primary", 502, 1234, "bad gateway from primary"),
        ("backup", 500, 87, "internal error from backup"),
    ]
    # An attempt names the channel as it is now: the 504's recorded name "b" gives way to "backup".
    timed_out = (await client.get(f"/api/usage/{rows[5].id}", headers=auth_headers(tenant_a.admin))).json()
    assert [a["channel"] for a in timed_out["attempts"]] == ["backup"]
    # An end user reads their own calls, not the admin's; another organization reads none.
    assert (await client.get(f"/api/usage/{theirs.id}", headers=auth_headers(tenant_a.user))).status_code == 200
    assert (await client.get(f"/api/usage/{budget.id}", headers=auth_headers(tenant_a.user))).status_code == 404
    assert (await client.get(f"/api/usage/{budget.id}", headers=auth_headers(tenant_b.admin))).status_code == 404
    assert (await client.get("/api/usage/not-an-id", headers=auth_headers(tenant_a.admin))).status_code in (400, 404)

    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    listing = await client.get("/portal/usage")
    assert listing.status_code == 200
    assert f'href="/portal/usage/{failed_over.id}"' in listing.text
    assert listing.text.count('<tr class="failed">') == 6  # the refused and failed calls stand out
    detail = await client.get(f"/portal/usage/{failed_over.id}")
    assert detail.status_code == 200
    shown = text_of(detail.text)
    for expected in (
        "2026-11-03 09:15:02.345 UTC",
        "req-failed-over",
        tenant_a.admin.email,
        "billing app",
        "none answered",
        "Every channel tried failed",
        "Every channel failed.",
        "1 primary 502 1,234 ms bad gateway from primary",
        "2 backup 500 87 ms internal error from backup",
    ):
        assert expected in shown, expected
    budget_page = text_of((await client.get(f"/portal/usage/{budget.id}")).text)
    assert "Refused by Lyss before any provider was called: The budget is used up" in budget_page
    assert "(the limit set on the group Research)" in budget_page
    assert "No channel was called." in budget_page
    served = text_of((await client.get(f"/portal/usage/{rows[6].id}")).text)
    assert "$1.23" in served
    assert "backup" in served
    assert "Answered" in served
    assert (await client.get(f"/portal/usage/{UUID(int=7)}")).status_code == 404

    # The list's filters still narrow it: by outcome, by status, by channel (answered or tried).
    refused = await client.get("/portal/usage?outcome=refused")
    assert refused.text.count('<tr class="failed">') == 4
    assert (await client.get("/portal/usage?status_code=429")).text.count('<tr class="failed">') == 1
    tried = await client.get(f"/portal/usage?channel_id={made.primary}")
    assert {str(rows[4].id), str(rows[6].id), str(rows[7].id)} == set(
        re.findall(r'href="/portal/usage/([0-9a-f-]{36})"', tried.text)
    )
    too_long = await client.get("/portal/usage?outcome=" + "x" * 31)
    assert too_long.status_code == 400
    assert field_error(too_long.text, "outcome")

    # An end user's page is theirs only.
    await client.post("/portal/logout", data={"csrf_token": token})
    await sign_in(client, tenant_a, tenant_a.user.email)
    assert (await client.get(f"/portal/usage/{budget.id}")).status_code == 404
    assert (await client.get(f"/portal/usage/{theirs.id}")).status_code == 200


async def test_refused_and_failed_calls_count_as_errors_on_the_dashboard_the_daily_api_channels_and_keys(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    made = await channels_and_key(client, upstream, tenant_a, auth_headers)
    await store(session_maker, tenant_a, one_of_each(tenant_a, made))

    daily = (await client.get("/api/usage/daily", headers=auth_headers(tenant_a.admin))).json()
    assert [(day["requests"], day["errors"]) for day in daily] == [(8, 6)]
    await sign_in(client, tenant_a, tenant_a.admin.email)
    dashboard = text_of((await client.get("/portal/")).text)
    assert "75.0% error rate: 6 of 8 calls" in dashboard
    assert "no 2xx answer" in dashboard

    # Each channel: every attempt on it, a failed-over call on both; a failure is an attempt without a 2xx.
    channels = (await client.get("/portal/channels")).text
    for channel_id in (made.primary, made.backup):
        row = channels.split(f'id="channel-{channel_id}"', 1)[1].split("</tr>", 1)[0]
        assert re.search(r'class="num channel-calls"><a href="[^"]+">3</a> <span class="badge bad">2 failed', row)
    keys = (await client.get("/portal/tokens")).text
    assert re.search(r'class="num key-calls"><a href="/portal/usage\?token_id=[^"]+">8</a> <span[^>]*>6 failed', keys)
    by_key = await client.get(f"/portal/usage?token_id={made.key}")
    assert by_key.text.count("<tr") - 1 == 8  # the header's row, then every call of the key
    assert by_key.text.count('<tr class="failed">') == 6


async def test_the_usage_csv_names_users_keys_and_channels_and_says_why_a_call_failed(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    made = await channels_and_key(client, upstream, tenant_a, auth_headers)
    rows = one_of_each(tenant_a, made)
    await store(session_maker, tenant_a, rows)
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Organization).values(currency="EUR"))
        await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    started = await client.post("/portal/usage/export", data={"csrf_token": token})
    job_id = started.headers["location"].rsplit("export=", 1)[1]
    # The job's page links the file once there is one, not before.
    assert "/api/usage/exports/" not in (await client.get(f"/portal/jobs/{job_id}")).text
    async with running_worker(settings):
        job = await wait_for_status(client, auth_headers(tenant_a.admin), job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    job_page = await client.get(f"/portal/jobs/{job_id}")
    assert f'href="/api/usage/exports/{job_id}"' in job_page.text
    # The link works with the portal's own session: a redirect to the file.
    redirect = await client.get(f"/api/usage/exports/{job_id}")
    assert redirect.status_code == 303
    exported = list(csv.DictReader(io.StringIO((await client.get(redirect.headers["location"])).text)))

    by_id = {line["usage_id"]: line for line in exported}
    assert len(by_id) == len(rows) == 8
    served, failed, budget = by_id[str(rows[6].id)], by_id[str(rows[4].id)], by_id[str(rows[2].id)]
    assert (served["user"], served["key"], served["channel"]) == (tenant_a.admin.email, "billing app", "backup")
    assert (served["cost_credits"], served["cost"], served["currency"]) == ("1230000", "1.230000", "EUR")
    assert (served["status_code"], served["outcome"], served["channel_id"]) == ("200", "ok", str(made.backup))
    assert (failed["channel"], failed["outcome"], failed["error"]) == ("", "upstream_error", "Every channel failed.")
    assert (failed["cost_credits"], failed["cost"]) == ("0", "0.000000")
    assert (budget["status_code"], budget["reason"], budget["error"]) == (
        "429",
        "budget",
        "The group's budget is used up.",
    )
    assert budget["token_id"] == str(made.key)
    assert budget["user_id"] == str(tenant_a.admin.id)
