"""The portal over HTTP (no browser): sign-in, CSRF on every form, security headers, roles, form errors."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from uuid import UUID

import httpx
import msgspec
import pyotp
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.admin import export_name
from app.settings import Settings
from app.storage import create_object_store
from db.auth import User
from db.provider import ApiToken, Channel, UsageLog
from db.session import tenant_session
from db.tenant import AuditEvent, Organization
from tests.support.auth import code_of_next_step, enrol, login
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import CSRF, FORM_TOKEN, field_error, sign_in
from tests.support.tenants import TEST_PASSWORD, TenantRows, audit_actions


async def test_pages_need_a_session_and_carry_strict_security_headers(client: Client) -> None:
    response = await client.get("/portal/usage?model=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login?next=%2Fportal%2Fusage%3Fmodel%3Dx"
    login = await client.get("/portal/login")
    assert login.status_code == 200
    policy = login.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["x-content-type-options"] == "nosniff"
    assert 'autocomplete="username"' in login.text  # field attributes are markup, not escaped text
    # Nothing inline for the policy to allow: every script is a file.
    assert "<script>" not in login.text
    assert " style=" not in login.text
    static = await client.get("/portal/static/portal.css")
    assert static.status_code == 200
    assert "content-security-policy" in static.headers
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/portal/"


async def test_sign_in_errors_keep_the_input_and_say_what_is_wrong(client: Client, tenant_a: TenantRows) -> None:
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    empty = await client.post("/portal/login", data={"tenant": tenant_a.slug, "form_token": form_token[1]})
    assert empty.status_code == 400
    assert field_error(empty.text, "email") == "This field is required."
    assert f'value="{tenant_a.slug}"' in empty.text  # kept
    form_token = FORM_TOKEN.search(empty.text)  # each rendering of the form carries a fresh token
    assert form_token
    wrong = await client.post(
        "/portal/login",
        data={"tenant": tenant_a.slug, "email": tenant_a.admin.email, "password": "nope", "form_token": form_token[1]},
    )
    assert wrong.status_code == 401
    assert "Invalid" in wrong.text
    assert tenant_a.admin.email in wrong.text
    forged = await client.post(
        "/portal/login",
        data={"tenant": tenant_a.slug, "email": tenant_a.admin.email, "password": TEST_PASSWORD, "form_token": "x"},
    )
    assert forged.status_code == 400
    assert "lyss_session" not in forged.headers.get("set-cookie", "")


def _portal_form_routes(app: Litestar) -> list[str]:
    return [
        route.path
        for route in app.routes
        if isinstance(route, HTTPRoute)
        and route.path.startswith("/portal")
        and any(
            "POST" in handler.http_methods and not handler.opt.get("portal_public") for handler in route.route_handlers
        )
    ]


async def test_every_signed_in_form_refuses_a_post_without_the_csrf_token(
    client: Client, app: Litestar, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    paths = _portal_form_routes(app)
    assert {"/portal/channels/new", "/portal/tokens/new", "/portal/logout"} <= set(paths)
    example_id = "00000000-0000-0000-0000-000000000000"
    # Another token of the same length (a fixed suffix would be the right token whenever it already ends so).
    wrong_token = token[:-2] + ("11" if token.endswith("00") else "00")
    for path in paths:
        concrete = re.sub(r"\{[^}]+:uuid\}", example_id, path).replace("{action:str}", "disable")
        refused = await client.post(concrete, data={"name": "x"})
        assert refused.status_code == 403, (path, refused.status_code)
        wrong = await client.post(concrete, data={"name": "x", "csrf_token": wrong_token})
        assert wrong.status_code == 403, path
    # The session still works, and nothing was created.
    assert (await client.get("/portal/")).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0


async def test_channel_form_errors_sit_next_to_their_fields_and_nothing_is_saved(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "keys": "k"}
    empty = await client.post("/portal/channels/new", data=base | {"name": "", "models": ""})
    assert empty.status_code == 400
    assert field_error(empty.text, "name") == "This field is required."
    assert field_error(empty.text, "models") == "Enter at least one."
    bad = await client.post(
        "/portal/channels/new", data=base | {"name": "x" * 101, "models": "m", "priority": "high", "weight": "0"}
    )
    assert field_error(bad.text, "name") == "At most 100 characters."
    assert field_error(bad.text, "priority") == "Enter a whole number."
    assert field_error(bad.text, "weight") == "At least 1."
    assert 'value="high"' in bad.text  # what was typed stays
    assert 'name="keys"' in bad.text  # keys are never echoed back
    assert ">k<" not in bad.text
    ok = await client.post("/portal/channels/new", data=base | {"name": "primary", "models": "gpt-test\nother"})
    assert ok.status_code == 303
    duplicate = await client.post("/portal/channels/new", data=base | {"name": "primary", "models": "m"})
    assert duplicate.status_code == 409
    assert "already exists" in (field_error(duplicate.text, "name") or "")
    async with tenant_session(session_maker, tenant_a.id) as session:
        channels = list(await session.scalars(select(Channel)))
    assert [(channel.name, channel.models) for channel in channels] == [("primary", ["gpt-test", "other"])]


async def test_the_channel_edit_form_says_how_many_keys_are_stored_even_after_a_refusal(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "models": "m"}
    created = await client.post("/portal/channels/new", data=base | {"name": "pair", "keys": "k1\nk2"})
    assert created.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel_id = await session.scalar(select(Channel.id))

    edit = await client.get(f"/portal/channels/{channel_id}")
    assert "Leave empty to keep the 2 stored keys." in edit.text
    refused = await client.post(f"/portal/channels/{channel_id}", data=base | {"name": "pair", "priority": "high"})
    assert refused.status_code == 400
    assert "Edit channel pair" in refused.text
    assert "Leave empty to keep the 2 stored keys." in refused.text


async def test_edit_forms_show_their_errors_next_to_the_fields_and_change_nothing(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "keys": "k"}
    for name in ("first", "second"):
        assert (await client.post("/portal/channels/new", data=base | {"name": name, "models": "m"})).status_code == 303
    assert (await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "key"})).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        second = await session.scalar(select(Channel.id).where(Channel.name == "second"))
        key_id = await session.scalar(select(ApiToken.id))

    unparsable = await client.post(
        f"/portal/channels/{second}", data=base | {"name": "second", "models": "x", "priority": "high"}
    )
    assert unparsable.status_code == 400
    assert field_error(unparsable.text, "priority") == "Enter a whole number."
    taken = await client.post(f"/portal/channels/{second}", data=base | {"name": "first", "models": "x"})
    assert taken.status_code == 409
    assert "already exists" in (field_error(taken.text, "name") or "")
    assert "Edit channel second" in taken.text
    bad_network = await client.post(
        f"/portal/tokens/{key_id}", data={"csrf_token": token, "name": "renamed", "allowed_ips": "nowhere"}
    )
    assert bad_network.status_code == 400
    assert "allowed_ips" in (field_error(bad_network.text, "allowed_ips") or "")
    bad_quota = await client.post(
        f"/portal/tokens/{key_id}", data={"csrf_token": token, "name": "renamed", "quota": "lots"}
    )
    assert (bad_quota.status_code, field_error(bad_quota.text, "quota")) == (
        400,
        "&#39;lots&#39; is not an amount of money; write it like 1.23.",
    )
    async with tenant_session(session_maker, tenant_a.id) as session:
        channels = dict((await session.execute(select(Channel.name, Channel.models))).all())
        keys = list(await session.scalars(select(ApiToken.name)))
    assert channels == {"first": ["m"], "second": ["m"]}
    assert keys == ["key"]


async def test_the_channel_form_sets_the_test_call_and_refuses_embeddings_where_there_are_none(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = {"csrf_token": token, "keys": "k", "test_kind": "embeddings"}
    vectors = form | {"name": "vectors", "type": "openai-compatible", "base_url": upstream.base_url("v"), "models": "e"}
    assert (await client.post("/portal/channels/new", data=vectors)).status_code == 303
    claude = form | {"name": "claude", "type": "anthropic", "models": "claude-test"}
    refused = await client.post("/portal/channels/new", data=claude)
    assert refused.status_code == 400
    assert "no embeddings API" in (field_error(refused.text, "test_kind") or "")
    assert (await client.post("/portal/channels/new", data=claude | {"test_kind": "chat"})).status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = dict((await session.execute(select(Channel.name, Channel.test_kind))).all())
        claude_id = await session.scalar(select(Channel.id).where(Channel.name == "claude"))
    assert rows == {"vectors": "embeddings", "claude": "chat"}
    edit = await client.get(f"/portal/channels/{claude_id}")
    assert '<option value="chat" selected>' in edit.text
    changed = await client.post(f"/portal/channels/{claude_id}", data=claude)
    assert changed.status_code == 400
    assert "no embeddings API" in (field_error(changed.text, "test_kind") or "")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Channel.test_kind).where(Channel.id == claude_id)) == "chat"


async def test_a_service_refusal_sits_next_to_the_field_it_names_whatever_the_input_says(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    channel = {"csrf_token": token, "name": "c", "models": "m", "type": "openai-compatible"}
    no_base_url = await client.post("/portal/channels/new", data=channel | {"keys": "k"})
    assert no_base_url.status_code == 400
    assert "needs its base_url" in (field_error(no_base_url.text, "base_url") or "")
    no_keys = await client.post("/portal/channels/new", data=channel | {"base_url": upstream.base_url("c")})
    assert no_keys.status_code == 400
    assert "at least one API key" in (field_error(no_keys.text, "keys") or "")
    # A value that spells another field's name once steered the message to that field.
    odd_type = await client.post("/portal/channels/new", data=channel | {"type": "keys", "keys": "k"})
    assert odd_type.status_code == 400
    assert "Unknown channel type 'keys'" in html.unescape(field_error(odd_type.text, "type") or "")
    assert field_error(odd_type.text, "keys") is None
    key = {"csrf_token": token, "name": "key"}
    past = await client.post("/portal/tokens/new", data=key | {"expires_at": "2020-01-01T00:00"})
    assert past.status_code == 400
    assert field_error(past.text, "expires_at") == "expires_at is in the past."
    odd_network = await client.post("/portal/tokens/new", data=key | {"allowed_ips": "expires_at"})
    assert odd_network.status_code == 400
    assert "does not appear to be" in html.unescape(field_error(odd_network.text, "allowed_ips") or "")
    assert field_error(odd_network.text, "expires_at") is None
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0
        assert await session.scalar(select(func.count()).select_from(ApiToken)) == 0


async def test_portal_changes_reach_every_workers_cache_at_once(
    settings: Settings, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    cached = msgspec.structs.replace(settings, gateway_cache_seconds=300.0)
    async with app_client(cached) as portal, app_client(cached) as other:
        channel = await add_channel(portal, auth_headers(tenant_a.admin), upstream, "primary")
        revoked, revoked_token = await issue_key(portal, auth_headers(tenant_a.user))
        kept, _ = await issue_key(portal, auth_headers(tenant_a.user), name="kept")
        for key in (revoked, kept):  # the other worker now holds both keys and the channel in its caches
            assert (await other.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
        token = await sign_in(portal, tenant_a, tenant_a.admin.email)
        revoke = await portal.post(f"/portal/tokens/{revoked_token['id']}/revoke", data={"csrf_token": token})
        assert revoke.status_code == 303
        disable = await portal.post(f"/portal/channels/{channel['id']}/disable", data={"csrf_token": token})
        assert disable.status_code == 303
        statuses: tuple[int, int] = (200, 200)
        for _ in range(40):  # the other worker hears of both over Redis pub/sub within its half-second poll
            statuses = (
                (await other.post("/v1/chat/completions", json=chat_body(), headers=bearer(revoked))).status_code,
                (await other.post("/v1/chat/completions", json=chat_body(), headers=bearer(kept))).status_code,
            )
            if statuses[0] == 401 and statuses[1] != 200:
                break
            await asyncio.sleep(0.05)
        assert statuses[0] == 401
        assert statuses[1] != 200  # no enabled channel serves the model any more


async def test_an_end_user_cannot_change_channels_through_the_portal(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary")
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    for action in ("disable", "test", "delete"):
        response = await client.post(f"/portal/channels/{channel['id']}/{action}", data={"csrf_token": token})
        assert response.status_code == 403, action
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Channel, UUID(channel["id"]))
        assert (stored.status, stored.last_test_at) == ("enabled", None)


@pytest.mark.parametrize("path", ["/portal/channels", "/portal/channels/new"])
async def test_an_end_user_cannot_open_admin_pages(client: Client, tenant_a: TenantRows, path: str) -> None:
    await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.get(path)
    assert response.status_code == 403
    assert "administrators" in response.text
    assert 'href="/portal/channels"' not in (await client.get("/portal/")).text  # not in the menu either


async def test_key_is_shown_once_and_users_see_only_their_own_keys(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    created = await client.post(
        "/portal/tokens/new",
        data={"csrf_token": token, "name": "admin key", "quota": "", "budget_period": "none", "user_id": ""},
    )
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    key = re.search(r'id="new-key">(sk-lyss-[^<]+)<', created.text)
    assert key
    listing = (await client.get("/portal/tokens")).text
    assert "admin key" in listing
    assert key[1] not in listing
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.scalar(select(ApiToken.key_hash).where(ApiToken.name == "admin key"))
    assert stored
    assert key[1] not in stored

    await client.post("/portal/logout", data={"csrf_token": token})
    assert (await client.get("/portal/")).status_code == 303
    await sign_in(client, tenant_a, tenant_a.user.email)
    own = (await client.get("/portal/tokens")).text
    assert "admin key" not in own


async def fetch_export(client: Client, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An export as a browser gets it: the 303 to a short-lived link, then the file (no credentials needed)."""
    redirect = await client.get(path, headers=headers)
    assert redirect.status_code == 303, redirect.text
    return await client.get(redirect.headers["location"])


async def test_usage_exports_as_csv_through_a_job_only_the_callers_rows_and_no_formulas(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
    auth_headers: AuthHeaders,
) -> None:
    for tenant, model in ((tenant_a, "gpt-a"), (tenant_b, "gpt-b")):
        async with tenant_session(session_maker, tenant.id) as session:
            session.add_all(
                [
                    UsageLog(user_id=tenant.admin.id, endpoint="chat", model=model, prompt_tokens=3, cost=7),
                    UsageLog(user_id=tenant.user.id, endpoint="chat", model='=HYPERLINK("http://x")', cost=1),
                ]
            )
            await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    started = await client.post("/portal/usage/export", data={"csrf_token": token, "model": ""})
    assert started.status_code == 303
    job_id = started.headers["location"].rsplit("export=", 1)[1]
    pending = await client.get(f"/portal/usage/exports/{job_id}")
    assert pending.status_code == 409  # not finished yet
    async with running_worker(settings):
        job = await wait_for_status(client, auth_headers(tenant_a.admin), job_id, {"succeeded", "failed"})
    assert job["result"]["rows"] == 2, job
    assert "download the CSV" in (await client.get(started.headers["location"])).text
    download = await fetch_export(client, f"/portal/usage/exports/{job_id}")
    assert download.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="lyss-usage-' in download.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0][:3] == ["created_at", "request_id", "user"]
    models = sorted(row[6] for row in rows[1:])
    assert models == ['\'=HYPERLINK("http://x")', "gpt-a"]  # a formula is written as text; no tenant B row
    # The same file through the API; tenant B's admin cannot fetch it.
    api = await fetch_export(client, f"/api/usage/exports/{job_id}", auth_headers(tenant_a.admin))
    assert api.text == download.text
    # The download link alone is the credential: short-lived, and useless once altered.
    link = (await client.get(f"/api/usage/exports/{job_id}", headers=auth_headers(tenant_a.admin))).headers["location"]
    assert link.startswith("/api/objects/")
    assert (await client.get(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))).status_code == 404
    other = await client.get(f"/api/usage/exports/{job_id}", headers=auth_headers(tenant_b.admin))
    assert other.status_code == 404

    # An end user's export holds their own calls only, whatever they filter on; the admin's is not theirs.
    await client.post("/portal/logout", data={"csrf_token": token})
    user_token = await sign_in(client, tenant_a, tenant_a.user.email)
    assert (await client.get(f"/portal/usage/exports/{job_id}")).status_code == 404
    own = await client.post("/portal/usage/export", data={"csrf_token": user_token, "user_id": str(tenant_a.admin.id)})
    own_id = own.headers["location"].rsplit("export=", 1)[1]
    async with running_worker(settings):
        await wait_for_status(client, auth_headers(tenant_a.user), own_id, {"succeeded", "failed"})
    own_rows = list(csv.reader(io.StringIO((await fetch_export(client, f"/portal/usage/exports/{own_id}")).text)))
    assert [(row[2], row[-3]) for row in own_rows[1:]] == [(tenant_a.user.email, str(tenant_a.user.id))]
    # Expired: the file is gone, the page says so.
    await create_object_store(settings).delete(tenant_a.id, export_name(UUID(own_id)))
    assert (await client.get(f"/portal/usage/exports/{own_id}")).status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        exported = [
            (event.action, event.actor_user_id)
            for event in await session.scalars(
                select(AuditEvent).where(AuditEvent.action.like("usage.export%")).order_by(AuditEvent.created_at)
            )
        ]
    assert exported == [
        ("usage.exported", tenant_a.admin.id),
        ("usage.export_downloaded", tenant_a.admin.id),
        ("usage.export_downloaded", tenant_a.admin.id),
        ("usage.export_downloaded", tenant_a.admin.id),
        ("usage.exported", tenant_a.user.id),
        ("usage.export_downloaded", tenant_a.user.id),
    ]


async def test_an_admin_the_policy_requires_to_enrol_does_so_before_reaching_any_page(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        organization = await session.get_one(Organization, tenant_a.id)
        organization.settings = {**organization.settings, "require_mfa_for_admins": True}
        await session.commit()
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    signed = await client.post(
        "/portal/login",
        data={
            "tenant": tenant_a.slug,
            "email": tenant_a.admin.email,
            "password": TEST_PASSWORD,
            "form_token": form_token[1],
        },
    )
    assert signed.headers["location"] == "/portal/enrol"
    assert (await client.get("/portal/")).status_code == 303  # no portal session yet
    enrol = await client.get("/portal/enrol")
    secret = re.search(r'id="mfa-secret">([A-Z2-7]+)<', enrol.text)
    enrol_token = FORM_TOKEN.search(enrol.text)
    assert secret
    assert enrol_token
    wrong = await client.post("/portal/enrol", data={"code": "000000", "form_token": enrol_token[1]})
    assert wrong.status_code == 400
    assert field_error(wrong.text, "code")
    assert f'id="mfa-secret">{secret[1]}<' in wrong.text  # the key stays on screen for the next code
    retry_token = FORM_TOKEN.search(wrong.text)
    assert retry_token
    done = await client.post("/portal/enrol", data={"code": pyotp.TOTP(secret[1]).now(), "form_token": retry_token[1]})
    assert done.status_code == 200
    assert (
        len(re.findall(r"^[0-9a-z-]{8,}$", done.text.split('id="recovery-codes">')[1].split("</pre>")[0], re.M)) == 10
    )
    async with tenant_session(session_maker, tenant_a.id) as session:
        admin = await session.get_one(User, tenant_a.admin.id)
        assert admin.mfa_enabled
    # From now on the password leads to the code step.
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    again = await client.post(
        "/portal/login",
        data={
            "tenant": tenant_a.slug,
            "email": tenant_a.admin.email,
            "password": TEST_PASSWORD,
            "form_token": form_token[1],
        },
    )
    assert again.headers["location"].startswith("/portal/login/mfa")


async def test_channel_and_key_changes_are_audited_with_who_and_what_but_never_secrets(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("audit")}
    created = await client.post("/portal/channels/new", data=form | {"name": "audited", "models": "m", "keys": "sk-x1"})
    assert created.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel_id = await session.scalar(select(Channel.id).where(Channel.name == "audited"))
    edit = form | {"name": "audited", "models": "m\nn", "keys": "sk-secret-2", "priority": "5", "weight": "1"}
    assert (await client.post(f"/portal/channels/{channel_id}", data=edit)).status_code == 303
    assert (await client.post(f"/portal/channels/{channel_id}/disable", data={"csrf_token": token})).status_code == 303
    assert (await client.post(f"/portal/channels/{channel_id}/delete", data={"csrf_token": token})).status_code == 303
    issued = await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "audited key", "quota": ""})
    key = re.search(r'id="new-key">(sk-lyss-[^<]+)<', issued.text)
    assert key
    async with tenant_session(session_maker, tenant_a.id) as session:
        key_id = await session.scalar(select(ApiToken.id).where(ApiToken.name == "audited key"))
    assert (await client.post(f"/portal/tokens/{key_id}/revoke", data={"csrf_token": token})).status_code == 303

    async with tenant_session(session_maker, tenant_a.id) as session:
        events = list(
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.target_type.in_(["channel", "api_token"]))
                .order_by(AuditEvent.created_at, AuditEvent.id)
            )
        )
    assert [(event.action, event.target_id) for event in events] == [
        ("channel.created", str(channel_id)),
        ("channel.updated", str(channel_id)),
        ("channel.disabled", str(channel_id)),
        ("channel.deleted", str(channel_id)),
        ("token.created", str(key_id)),
        ("token.revoked", str(key_id)),
    ]
    assert {event.actor_user_id for event in events} == {tenant_a.admin.id}
    assert events[1].details["fields"] == ["keys", "models", "priority"]  # what changed, not what was sent
    written = str([(event.details, event.actor) for event in events])
    for secret in ("sk-x1", "sk-secret-2", key[1]):
        assert secret not in written


async def test_recovery_code_sign_in_oauth_buttons_and_sign_out_everywhere(
    client: Client, settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    # The organization's OAuth providers appear once the organization is known.
    buttons = (await client.get(f"/portal/login?tenant={tenant_a.slug}")).text
    assert (
        f'href="/api/auth/tenants/{tenant_a.slug}/oauth/github/authorize?mode=portal&amp;return_to=/portal/"' in buttons
    )
    assert "oauth/github" not in (await client.get("/portal/login?tenant=no-such-org")).text

    # Enrol through the account page, keep one recovery code, sign out.
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    enrolment = await client.post("/portal/account/mfa", data={"csrf_token": token})
    secret = re.search(r'id="mfa-secret">([A-Z2-7]+)<', enrolment.text)
    assert secret
    confirmed = await client.post(
        "/portal/account/mfa/confirm", data={"csrf_token": token, "code": pyotp.TOTP(secret[1]).now()}
    )
    codes = confirmed.text.split('id="recovery-codes">')[1].split("</pre>")[0].split()
    assert len(codes) == 10
    await client.post("/portal/logout", data={"csrf_token": token})

    # Password, then a recovery code instead of the app's code; the same code never works twice.
    async def password_step(browser: Client) -> None:
        form_token = FORM_TOKEN.search((await browser.get("/portal/login")).text)
        assert form_token
        response = await browser.post(
            "/portal/login",
            data={
                "tenant": tenant_a.slug,
                "email": tenant_a.admin.email,
                "password": TEST_PASSWORD,
                "form_token": form_token[1],
            },
        )
        assert response.headers["location"].startswith("/portal/login/mfa")

    async def recovery_step(browser: Client, code: str) -> int:
        form_token = FORM_TOKEN.search((await browser.get("/portal/login/mfa")).text)
        assert form_token
        response = await browser.post("/portal/login/mfa", data={"recovery_code": code, "form_token": form_token[1]})
        if response.status_code != 303:
            assert field_error(response.text, "recovery_code"), response.text  # said next to the field
        return response.status_code

    await password_step(client)
    assert await recovery_step(client, codes[0]) == 303
    assert (await client.get("/portal/")).status_code == 200

    # A second browser signs in too; "sign out everywhere" from the first ends both at once.
    async with app_client(settings) as other:
        await password_step(other)
        assert await recovery_step(other, codes[0]) == 400  # spent
        assert await recovery_step(other, codes[1]) == 303
        assert (await other.get("/portal/")).status_code == 200
        first_token = CSRF.search((await client.get("/portal/account")).text)
        assert first_token
        ended = await client.post("/portal/logout-all", data={"csrf_token": first_token[1]})
        assert ended.headers["location"] == "/portal/login"
        assert (await other.get("/portal/")).status_code == 303
        assert (await client.get("/portal/")).status_code == 303


async def test_a_code_step_refused_because_the_organization_was_suspended_keeps_no_sign_in(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    # The portal keeps of a refused sign-in what the API keeps: no "login.succeeded", no last sign-in time.
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    totp, _ = await enrol(client, tokens)
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    password_step = await client.post(
        "/portal/login",
        data={
            "tenant": tenant_a.slug,
            "email": tenant_a.user.email,
            "password": TEST_PASSWORD,
            "form_token": form_token[1],
        },
    )
    assert password_step.headers["location"].startswith("/portal/login/mfa")
    async with tenant_session(session_maker, tenant_a.id) as session:
        last_login_at = (await session.get_one(User, tenant_a.user.id)).last_login_at
        (await session.get_one(Organization, tenant_a.id)).status = "suspended"
        await session.commit()
    signed_in_before = (await audit_actions(session_maker, tenant_a.id)).count("login.succeeded")

    form_token = FORM_TOKEN.search((await client.get("/portal/login/mfa")).text)
    assert form_token
    refused = await client.post(
        "/portal/login/mfa", data={"code": code_of_next_step(totp), "form_token": form_token[1]}
    )

    assert refused.status_code == 400
    assert "not active" in (field_error(refused.text, "code") or "")
    assert (await audit_actions(session_maker, tenant_a.id)).count("login.succeeded") == signed_in_before
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(User, tenant_a.user.id)).last_login_at == last_login_at
