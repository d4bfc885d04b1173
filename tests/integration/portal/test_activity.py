"""The portal's audit log, jobs and memories pages over HTTP: roles, filters, keyset pages, actions, isolation."""

from __future__ import annotations

import datetime
import html
import re
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.memory import Memory, MemoryHistory
from db.session import tenant_session
from db.tenant import AuditEvent
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker, submit, wait_for_status
from tests.support.memory import configure_memory
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import FORM_TOKEN, field_error, sign_in
from tests.support.tenants import TenantRows

EVENT_ROW = re.compile(r'<tr id="event-([0-9a-f-]{36})">')
JOB_ROW = re.compile(r'<tr id="job-([0-9a-f-]{36})">')
MEMORY_ROW = re.compile(r'<tr id="memory-([0-9a-f-]{36})">')
NEXT_PAGE = re.compile(r'href="([^"]+)" rel="next"')


async def sign_out(client: Client, csrf_token: str) -> None:
    assert (await client.post("/portal/logout", data={"csrf_token": csrf_token})).status_code == 303


def next_page(page_html: str) -> str | None:
    found = NEXT_PAGE.search(page_html)
    return html.unescape(found[1]) if found else None


async def audit_ids(client: Client, **filters: str) -> list[str]:
    response = await client.get("/portal/audit", params=filters)
    assert response.status_code == 200, response.text
    return EVENT_ROW.findall(response.text)


async def event_ids(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, *actions: str) -> set[str]:
    async with tenant_session(session_maker, tenant.id) as session:
        rows = await session.scalars(select(AuditEvent.id).where(AuditEvent.action.in_(actions)))
        return {str(row) for row in rows}


# --- audit log -----------------------------------------------------------------------------------


async def test_audit_log_lists_security_events_newest_first_and_filters_narrow_them(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    refused = await client.post(
        "/portal/login",
        data={
            "tenant": tenant_a.slug,
            "email": "intruder@example.net",
            "password": "guess",
            "form_token": form_token[1],
        },
    )
    assert refused.status_code == 401
    settings_changed = await client.put(
        "/api/memories/settings", json={"enabled": False}, headers=auth_headers(tenant_a.admin)
    )
    assert settings_changed.status_code == 200, settings_changed.text
    token = await sign_in(client, tenant_a, tenant_a.admin.email)

    failed = await event_ids(session_maker, tenant_a, "login.failed")
    succeeded = await event_ids(session_maker, tenant_a, "login.succeeded")
    changed = await event_ids(session_maker, tenant_a, "memory.settings_changed")
    assert len(failed) == len(succeeded) == len(changed) == 1
    page = await client.get("/portal/audit")
    assert page.status_code == 200
    assert "intruder@example.net" in page.text
    assert " style=" not in page.text
    everything = EVENT_ROW.findall(page.text)
    # Newest first: the sign-in came last.
    assert everything == [*succeeded, *changed, *failed]

    assert set(await audit_ids(client, action="login")) == failed | succeeded
    assert set(await audit_ids(client, action="login.failed")) == failed
    assert await audit_ids(client, action="login.fail") == []  # a family is a whole dotted prefix
    assert set(await audit_ids(client, user_id=str(tenant_a.admin.id))) == succeeded | changed
    assert set(await audit_ids(client, actor="intruder@example.net")) == failed
    assert set(await audit_ids(client, target_type="organization")) == changed
    today = datetime.datetime.now(datetime.UTC).date()
    assert set(await audit_ids(client, since=today.isoformat(), until=today.isoformat())) == set(everything)
    assert await audit_ids(client, since=(today + datetime.timedelta(days=1)).isoformat()) == []
    assert await audit_ids(client, until=(today - datetime.timedelta(days=1)).isoformat()) == []

    # Bad input is shown next to its field; the valid filters still apply.
    bad = await client.get("/portal/audit", params={"since": "2024-13-45", "action": "login.failed"})
    assert bad.status_code == 400
    assert field_error(bad.text, "since") == "Enter a date as YYYY-MM-DD."
    assert set(EVENT_ROW.findall(bad.text)) == failed
    assert 'value="2024-13-45"' in bad.text
    # A NUL character is refused once, at the edge, for every page: a 400 naming the field, no rows.
    odd = await client.get("/portal/audit", params={"actor": "nul\x00byte", "until": "9999-12-31"})
    assert odd.status_code == 400
    assert "The query parameter `actor` contains a NUL character." in odd.text
    assert EVENT_ROW.findall(odd.text) == []

    # Another tenant's admin sees its own trail only.
    await sign_out(client, token)
    await sign_in(client, tenant_b, tenant_b.admin.email)
    seen_by_b = set(await audit_ids(client))
    assert seen_by_b == await event_ids(session_maker, tenant_b, "login.succeeded")
    assert not seen_by_b & (failed | succeeded | changed)
    assert await audit_ids(client, actor="intruder@example.net") == []


async def test_audit_log_pages_follow_each_other_without_repeats_even_on_equal_times(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    same_moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    async with tenant_session(session_maker, tenant_a.id) as session:
        for number in range(120):
            # Sixty events share one timestamp: only the id can order them across a page boundary.
            moment = same_moment if number < 60 else same_moment - datetime.timedelta(minutes=number)
            session.add(AuditEvent(actor="system", action="test.bulk", target_id=str(number), created_at=moment))
        await session.commit()
        expected = [
            str(row)
            for row in await session.scalars(
                select(AuditEvent.id).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            )
        ]
    assert len(expected) == 121  # and the admin's sign-in

    seen: list[str] = []
    address: str | None = "/portal/audit"
    pages = 0
    while address is not None:
        response = await client.get(address)
        assert response.status_code == 200, response.text
        seen.extend(EVENT_ROW.findall(response.text))
        address = next_page(response.text)
        pages += 1
    assert pages == 3
    assert seen == expected

    # Filters travel with the page link.
    first = await client.get("/portal/audit", params={"action": "test.bulk"})
    second_address = next_page(first.text)
    assert second_address is not None
    assert "action=test.bulk" in second_address
    second = await client.get(second_address)
    bulk = [row for row in expected if row != expected[0]]
    assert EVENT_ROW.findall(first.text) + EVENT_ROW.findall(second.text) == bulk[:100]

    broken = await client.get("/portal/audit", params={"cursor": "yesterday|nobody"})
    assert broken.status_code == 400
    assert "page link is broken" in broken.text
    assert EVENT_ROW.findall(broken.text) == expected[:50]

    await sign_out(client, token)
    await sign_in(client, tenant_a, tenant_a.user.email)
    forbidden = await client.get("/portal/audit")
    assert forbidden.status_code == 403
    assert 'href="/portal/audit"' not in (await client.get("/portal/")).text


# --- jobs ----------------------------------------------------------------------------------------


async def test_a_queued_job_is_canceled_and_a_failed_one_retried_from_the_portal(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    waiting = await submit(client, headers, "test.effect", payload={"marker": "portal-cancel"})
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    listing = await client.get("/portal/jobs")
    assert listing.status_code == 200
    assert 'id="jobs-live" data-refresh="3"' in listing.text
    assert "<script>" not in listing.text
    assert " style=" not in listing.text
    assert f'action="/portal/jobs/{waiting["id"]}/cancel"' in listing.text
    assert f'action="/portal/jobs/{waiting["id"]}/retry"' not in listing.text

    forged = await client.post(f"/portal/jobs/{waiting['id']}/cancel", data={"next": "/portal/jobs"})
    assert forged.status_code == 403
    assert (await client.get(f"/api/jobs/{waiting['id']}", headers=headers)).json()["status"] == "queued"

    canceled = await client.post(
        f"/portal/jobs/{waiting['id']}/cancel", data={"csrf_token": token, "next": "/portal/jobs?status=queued"}
    )
    assert canceled.status_code == 303
    assert canceled.headers["location"] == "/portal/jobs?status=queued"
    assert (await client.get(f"/api/jobs/{waiting['id']}", headers=headers)).json()["status"] == "canceled"
    # Somewhere else than a jobs page is not where a form may send the browser.
    again = await client.post(
        f"/portal/jobs/{waiting['id']}/retry", data={"csrf_token": token, "next": "https://evil.example/"}
    )
    assert again.headers["location"] == f"/portal/jobs/{waiting['id']}"
    assert (await client.get(f"/api/jobs/{waiting['id']}", headers=headers)).json()["status"] == "queued"
    await client.post(f"/portal/jobs/{waiting['id']}/cancel", data={"csrf_token": token})

    doomed = await submit(client, headers, "test.fails_first")
    async with running_worker(settings):
        failed = await wait_for_status(client, headers, doomed["id"], {"failed", "succeeded", "dead"})
        assert failed["status"] == "failed"
        detail = await client.get(f"/portal/jobs/{doomed['id']}")
        assert "JobFailed: the input was rejected" in detail.text
        assert 'id="job-live" data-refresh' not in detail.text  # a finished job does not reload
        retried = await client.post(f"/portal/jobs/{doomed['id']}/retry", data={"csrf_token": token})
        assert retried.status_code == 303
        done = await wait_for_status(client, headers, doomed["id"], {"succeeded", "failed", "dead"})
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    detail = await client.get(f"/portal/jobs/{doomed['id']}")
    events = re.findall(r"<td><code>([a-z_]+)</code></td>", detail.text)
    assert events == ["queued", "started", "failed", "retry_requested", "started", "succeeded"]

    # Canceling a finished job is refused with the reason, and changes nothing.
    late = await client.post(f"/portal/jobs/{doomed['id']}/cancel", data={"csrf_token": token})
    assert late.status_code == 409
    assert "already finished (succeeded)" in late.text
    assert (await client.get(f"/api/jobs/{doomed['id']}", headers=headers)).json()["status"] == "succeeded"


async def test_end_users_see_only_their_own_jobs_and_admins_every_job_of_the_tenant(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    own = await submit(client, auth_headers(tenant_a.user), "test.effect", payload={"marker": "mine"})
    admins = await submit(client, auth_headers(tenant_a.admin), "test.effect", payload={"marker": "theirs"})
    fixture = str(tenant_a.job.id)

    token = await sign_in(client, tenant_a, tenant_a.user.email)
    assert JOB_ROW.findall((await client.get("/portal/jobs")).text) == [own["id"]]
    assert (await client.get(f"/portal/jobs/{admins['id']}")).status_code == 404
    refused = await client.post(f"/portal/jobs/{admins['id']}/cancel", data={"csrf_token": token})
    assert refused.status_code == 404
    bad = await client.get("/portal/jobs", params={"status": "exploded", "kind": "test.effect"})
    assert bad.status_code == 400
    assert html.unescape(field_error(bad.text, "status") or "") == "'exploded' is not one of the choices."
    assert JOB_ROW.findall(bad.text) == [own["id"]]  # the kind filter still applies
    await sign_out(client, token)

    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert JOB_ROW.findall((await client.get("/portal/jobs")).text) == [admins["id"], own["id"], fixture]
    assert JOB_ROW.findall((await client.get("/portal/jobs", params={"status": "succeeded"})).text) == [fixture]
    assert JOB_ROW.findall((await client.get("/portal/jobs", params={"kind": "test.effect"})).text) == [
        admins["id"],
        own["id"],
    ]
    detail = await client.get(f"/portal/jobs/{own['id']}")
    assert detail.status_code == 200
    assert tenant_a.user.email in detail.text
    assert 'id="job-live" data-refresh="3"' in detail.text
    assert '"marker": "mine"' in html.unescape(detail.text)
    await sign_out(client, token)

    await sign_in(client, tenant_b, tenant_b.admin.email)
    assert JOB_ROW.findall((await client.get("/portal/jobs")).text) == [str(tenant_b.job.id)]
    assert (await client.get(f"/portal/jobs/{own['id']}")).status_code == 404


# --- memories ------------------------------------------------------------------------------------


async def test_users_see_their_own_memories_and_admins_read_and_erase_any_users(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    stored = await client.post(
        "/api/memories", json={"text": "Owns a red bicycle", "infer": False}, headers=auth_headers(tenant_a.user)
    )
    assert stored.status_code == 201, stored.text
    bicycle = stored.json()["id"]
    bicycle_id = UUID(bicycle)

    token = await sign_in(client, tenant_a, tenant_a.user.email)
    own = await client.get("/portal/memories")
    assert own.status_code == 200
    assert MEMORY_ROW.findall(own.text) == [bicycle]
    assert "Likes tea" not in own.text
    assert (await client.get("/portal/memories", params={"user_id": str(tenant_a.admin.id)})).status_code == 403
    assert (await client.get(f"/portal/memories/{tenant_a.memory.id}")).status_code == 404
    refused = await client.post(f"/portal/memories/{tenant_a.memory.id}/delete", data={"csrf_token": token})
    assert refused.status_code == 404
    bad = await client.get("/portal/memories", params={"memory_type": "dream"})
    assert bad.status_code == 400
    assert html.unescape(field_error(bad.text, "memory_type") or "") == "'dream' is not one of the choices."
    await sign_out(client, token)

    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    mine = await client.get("/portal/memories")
    assert set(MEMORY_ROW.findall(mine.text)) == {str(tenant_a.memory.id), str(tenant_a.related_memory.id)}
    users = await client.get("/portal/memories", params={"user_id": str(tenant_a.user.id)})
    assert MEMORY_ROW.findall(users.text) == [bicycle]
    assert f"Memories of {tenant_a.user.email}" in users.text
    detail = await client.get(f"/portal/memories/{bicycle}")
    assert detail.status_code == 200
    assert re.search(r"<td><code>ADD</code></td>\s*<td></td>\s*<td>Owns a red bicycle</td>", detail.text)

    forged = await client.post(f"/portal/memories/{bicycle}/delete", data={})
    assert forged.status_code == 403
    erased = await client.post(f"/portal/memories/{bicycle}/delete", data={"csrf_token": token})
    assert erased.status_code == 303
    assert erased.headers["location"] == f"/portal/memories?user_id={tenant_a.user.id}&erased=1"
    assert "Erased 1 memory." in (await client.get(erased.headers["location"])).text
    assert (await client.get(f"/portal/memories/{bicycle}")).status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Memory).where(Memory.id == bicycle_id)) == 0
        assert await session.scalar(select(func.count()).where(MemoryHistory.memory_id == bicycle_id)) == 0
        audit = await session.scalar(select(AuditEvent).where(AuditEvent.action == "memory.erased"))
    assert audit is not None
    assert (audit.actor_user_id, audit.target_id, audit.details["count"]) == (
        tenant_a.admin.id,
        str(tenant_a.user.id),
        1,
    )

    everything = await client.post(
        "/portal/memories/erase", data={"csrf_token": token, "user_id": str(tenant_a.admin.id)}
    )
    assert everything.headers["location"] == "/portal/memories?erased=2"
    async with tenant_session(session_maker, tenant_a.id) as session:
        left = await session.scalar(select(func.count()).select_from(Memory).where(Memory.user_id == tenant_a.admin.id))
    assert left == 0


async def test_portal_search_finds_the_users_memory_by_meaning_and_words(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    for text in ("Allergic to peanuts and cashews", "Plays the violin on weekends", "Works as a nurse in Lyon"):
        assert (
            await client.post("/api/memories", json={"text": text, "infer": False}, headers=user)
        ).status_code == 201
    assert (
        await client.post("/api/memories", json={"text": "Allergic to peanuts", "infer": False}, headers=admin)
    ).status_code == 201

    await sign_in(client, tenant_a, tenant_a.user.email)
    embeddings_before = upstream.calls["mem-embed"]
    found = await client.get("/portal/memories", params={"q": "peanuts allergy"})
    assert found.status_code == 200
    assert upstream.calls["mem-embed"] == embeddings_before + 1  # the query was embedded through the gateway
    texts = re.findall(r'<td><a href="/portal/memories/[0-9a-f-]{36}">([^<]+)</a></td>', found.text)
    assert texts[0] == "Allergic to peanuts and cashews"
    assert "Allergic to peanuts<" not in found.text  # the admin's memory never shows up in the user's search
    similarity = re.search(r'<td class="num">(0\.\d\d|1\.00)</td>', found.text)
    assert similarity
    assert float(similarity[1]) > 0


async def test_another_tenants_admin_gets_404_for_memories_and_users_of_this_tenant(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_b, tenant_b.admin.email)
    assert (await client.get(f"/portal/memories/{tenant_a.memory.id}")).status_code == 404
    refused = await client.post(f"/portal/memories/{tenant_a.memory.id}/delete", data={"csrf_token": token})
    assert refused.status_code == 404
    assert (await client.get("/portal/memories", params={"user_id": str(tenant_a.admin.id)})).status_code == 404
    erase = await client.post("/portal/memories/erase", data={"csrf_token": token, "user_id": str(tenant_a.admin.id)})
    assert erase.status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        kept = await session.scalar(select(func.count()).select_from(Memory).where(Memory.user_id == tenant_a.admin.id))
    assert kept == 2
