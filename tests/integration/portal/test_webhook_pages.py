"""The Webhooks pages without a browser: adding (the secret shown once), refusals next to their fields, editing,
testing with the delivery log, removing; administrators only."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows, audit_actions
from tests.support.webhook_receiver import webhook_receiver


async def webhook_ids(client: Client, headers: dict[str, str]) -> dict[str, str]:
    return {row["url"]: row["id"] for row in (await client.get("/api/webhooks", headers=headers)).json()}


async def test_an_admin_adds_a_webhook_and_sees_its_secret_once(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = {
        "csrf_token": csrf,
        "url": "https://hooks.example.com/lyss",
        "events": ["budget.threshold", "job.dead_lettered"],
    }
    created = await client.post("/portal/webhooks/new", data=form)
    assert created.status_code == 200, created.text
    secret = re.search(r'<p class="secret" id="webhook-secret">(whsec_[^<]+)</p>', created.text)
    assert secret, created.text
    listed = await client.get("/portal/webhooks")
    assert "https://hooks.example.com/lyss" in listed.text
    assert secret[1] not in listed.text
    webhook_id = (await webhook_ids(client, auth_headers(tenant_a.admin)))["https://hooks.example.com/lyss"]
    edit = await client.get(f"/portal/webhooks/{webhook_id}")
    assert secret[1] not in edit.text
    assert re.search(r'value="budget.threshold" checked', edit.text)
    assert not re.search(r'value="channel.reenabled" checked', edit.text)


async def test_webhook_form_refusals_sit_next_to_their_fields_and_nothing_is_saved(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    good = {"csrf_token": csrf, "url": "https://hooks.example.com/x", "events": ["job.dead_lettered"]}
    refusals: list[tuple[dict[str, object], str]] = [
        ({"url": ""}, "url"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://me:pw@hooks.example.com/x"}, "url"),
        ({"url": "https://h.example.com/" + "x" * 2000}, "url"),
        ({"events": []}, "events"),
        ({"events": ["channel.exploded"]}, "events"),
        ({"secret": "short"}, "secret"),
        ({"description": "d" * 501}, "description"),
    ]
    for change, field in refusals:
        page = await client.post("/portal/webhooks/new", data=good | change)
        assert page.status_code == 400, (change, page.status_code)
        assert field_error(page.text, field), (change, field)
        assert 'id="webhook-secret"' not in page.text
    assert "https://hooks.example.com/x" not in await webhook_ids(client, auth_headers(tenant_a.admin))
    kept = await client.post("/portal/webhooks/new", data=good | {"url": "gopher://kept.example.com/"})
    assert 'value="gopher://kept.example.com/"' in kept.text
    assert re.search(r'value="job.dead_lettered" checked', kept.text)

    await client.post("/portal/webhooks/new", data=good)
    webhook_id = (await webhook_ids(client, auth_headers(tenant_a.admin)))["https://hooks.example.com/x"]
    refused = await client.post(f"/portal/webhooks/{webhook_id}", data=good | {"url": "https://a:b@x.example.com"})
    assert refused.status_code == 400
    assert field_error(refused.text, "url")
    saved = await client.post(
        f"/portal/webhooks/{webhook_id}",
        data={"csrf_token": csrf, "url": "https://hooks.example.com/y", "events": ["channel.reenabled"]},
    )
    assert saved.status_code == 303
    shown = (await client.get(f"/api/webhooks/{webhook_id}", headers=auth_headers(tenant_a.admin))).json()
    # The enabled box left unticked turns the endpoint off.
    assert (shown["url"], shown["events"], shown["enabled"]) == (
        "https://hooks.example.com/y",
        ["channel.reenabled"],
        False,
    )


async def test_a_test_from_the_portal_shows_in_the_delivery_log_then_the_webhook_is_removed(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    async with webhook_receiver() as receiver:
        receiver.statuses = [503]
        await client.post(
            "/portal/webhooks/new", data={"csrf_token": csrf, "url": receiver.url, "events": ["job.dead_lettered"]}
        )
        webhook_id = (await webhook_ids(client, auth_headers(tenant_a.admin)))[receiver.url]
        sent = await client.post(f"/portal/webhooks/{webhook_id}/test", data={"csrf_token": csrf})
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/portal/webhooks/{webhook_id}/deliveries"
        async with running_worker(settings):
            await receiver.wait_for(2)
            for _ in range(200):
                log = await client.get(f"/portal/webhooks/{webhook_id}/deliveries")
                if log.text.count('class="delivery"') == 2:
                    break
    assert "The receiver answered HTTP 503." in log.text
    assert ">delivered<" in log.text
    assert ">failed<" in log.text
    removed = await client.post(f"/portal/webhooks/{webhook_id}/delete", data={"csrf_token": csrf})
    assert removed.status_code == 303
    assert (await client.get(f"/portal/webhooks/{webhook_id}/deliveries")).status_code == 404
    actions = await audit_actions(session_maker, tenant_a.id)
    assert [action for action in actions if action.startswith("webhook.")] == ["webhook.created", "webhook.deleted"]


async def test_an_end_user_cannot_reach_the_webhook_pages(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    webhook_id = tenant_a.webhook.id
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    assert "/portal/webhooks" not in (await client.get("/portal/")).text
    for path in ("/portal/webhooks", "/portal/webhooks/new", f"/portal/webhooks/{webhook_id}/deliveries"):
        assert (await client.get(path)).status_code == 403, path
    attempts = [
        ("/portal/webhooks/new", {"url": "https://evil.example.com", "events": ["job.dead_lettered"]}),
        (f"/portal/webhooks/{webhook_id}/delete", {}),
        (f"/portal/webhooks/{webhook_id}/test", {}),
    ]
    for path, form in attempts:
        assert (await client.post(path, data={"csrf_token": csrf, **form})).status_code == 403, path
    assert list(await webhook_ids(client, auth_headers(tenant_a.admin))) == [
        f"https://{tenant_a.slug}.example.com/hooks"
    ]
