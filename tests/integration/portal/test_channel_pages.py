"""The channel pages at scale, as a browser without JavaScript uses them: scope on the form, "Fetch models",
testing every channel as a job, search and filters in the address, cloning with the source's keys kept."""

from __future__ import annotations

import html
import re
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.caches import channel_keys_context
from app.settings import Settings
from db.provider import Channel
from db.session import tenant_session
from db.tenant import Job
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def textarea(page: str, name: str) -> str:
    found = re.search(rf'<textarea id="{name}" name="{name}"[^>]*>([^<]*)</textarea>', page)
    assert found, f"no textarea {name}"
    return html.unescape(found[1])


def selected(page: str, name: str) -> str | None:
    block = re.search(rf'<select id="{name}" name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert block, f"no select {name}"
    found = re.search(r'<option value="([^"]*)" selected>', block[1])
    return found[1] if found else None


def listed(page: str) -> list[str]:
    return re.findall(r'<tr id="channel-[^"]+">\s*<td><a href="[^"]+">([^<]+)</a>', page)


async def test_the_form_sets_a_channels_scope_with_errors_next_to_the_group_and_owner_fields(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = await client.get("/portal/channels/new")
    assert f'<option value="{tenant_a.group.id}">engineering</option>' in form.text
    assert f'<option value="{tenant_a.user.id}">{tenant_a.user.email}</option>' in form.text
    base = {"csrf_token": token, "type": "openai", "base_url": upstream.base_url("s"), "keys": "k", "models": "m"}
    no_group = await client.post("/portal/channels/new", data=base | {"name": "team", "scope": "group"})
    assert no_group.status_code == 400
    assert "group_id of a group" in (field_error(no_group.text, "group_id") or "")
    assert selected(no_group.text, "scope") == "group"
    no_owner = await client.post("/portal/channels/new", data=base | {"name": "mine", "scope": "personal"})
    assert "owner_id of a user" in (field_error(no_owner.text, "owner_id") or "")
    odd = await client.post("/portal/channels/new", data=base | {"name": "odd", "scope": "world", "group_id": "x"})
    assert field_error(odd.text, "scope") == "&#39;world&#39; is not one of the choices."
    assert field_error(odd.text, "group_id") == "Choose one of the listed options."
    group = str(tenant_a.group.id)
    saved = await client.post("/portal/channels/new", data=base | {"name": "team", "scope": "group", "group_id": group})
    assert saved.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel = await session.scalar(select(Channel).where(Channel.name == "team"))
        assert channel is not None
        assert (channel.config_scope, channel.group_id, channel.owner_id) == ("group", tenant_a.group.id, None)
    edit = await client.get(f"/portal/channels/{channel.id}")
    assert (selected(edit.text, "scope"), selected(edit.text, "group_id")) == ("group", group)

    # A scope change on the edit form: to personal needs an owner; the group is dropped.
    change = base | {"name": "team", "keys": ""}
    refused = await client.post(f"/portal/channels/{channel.id}", data=change | {"scope": "personal"})
    assert "owner_id of a user" in (field_error(refused.text, "owner_id") or "")
    user = str(tenant_a.user.id)
    moved = await client.post(f"/portal/channels/{channel.id}", data=change | {"scope": "personal", "owner_id": user})
    assert moved.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Channel, channel.id)
        assert (stored.config_scope, stored.group_id, stored.owner_id) == ("personal", None, tenant_a.user.id)


async def test_fetch_models_without_script_fills_the_field_and_saves_nothing(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    upstream.behave("fetching", models=["m-two", "m-one"])
    form = {
        "csrf_token": token,
        "intent": "fetch_models",
        "name": "new one",
        "type": "openai-compatible",
        "base_url": upstream.base_url("fetching"),
        "keys": "sk-typed-secret",
        "models": "",
    }
    fetched = await client.post("/portal/channels/new", data=form)
    assert fetched.status_code == 200
    assert textarea(fetched.text, "models") == "m-one\nm-two"
    assert "sk-typed-secret" not in fetched.text
    assert "Type the API key again before saving" in fetched.text
    assert upstream.headers_seen[-1]["Authorization"] == "Bearer sk-typed-secret"

    upstream.behave("fetching", status=401)
    refused = await client.post("/portal/channels/new", data=form)
    assert refused.status_code == 400
    assert field_error(refused.text, "models") == "The provider refused the API key (HTTP 401); check the key."
    assert "sk-typed-secret" not in refused.text
    keyless = await client.post("/portal/channels/new", data=form | {"keys": ""})
    assert field_error(keyless.text, "keys") == "Enter an API key to fetch the models with."
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(Channel.name))) == []

    # An existing channel is asked with its stored key when none is typed.
    upstream.behave("kept", models=["kept-model"])
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "kept")
    edit = {"csrf_token": token, "intent": "fetch_models", "name": "kept", "models": "gpt-test", "keys": ""}
    again = await client.post(f"/portal/channels/{channel['id']}", data=edit)
    assert textarea(again.text, "models") == "kept-model"
    assert upstream.headers_seen[-1]["Authorization"] == "Bearer key-of-kept"
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(Channel, UUID(channel["id"]))).models == ["gpt-test"]


async def test_test_all_starts_one_job_for_every_channel_and_the_list_follows_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    started = await client.post("/portal/channels/test-all", data={"csrf_token": token})
    assert started.status_code == 303
    found = re.fullmatch(r"/portal/channels\?test_job=([0-9a-f-]+)", started.headers["location"])
    assert found
    async with tenant_session(session_maker, tenant_a.id) as session:
        job = await session.get_one(Job, UUID(found[1]))
        assert (job.kind, job.payload, job.created_by) == (
            "gateway.test_channels",
            {"channel_ids": None},
            tenant_a.admin.id,
        )
    listing = await client.get(started.headers["location"])
    assert "Testing every channel… 0%" in listing.text
    assert f'<a href="/portal/jobs/{job.id}">Open the job</a>' in listing.text
    assert 'data-refresh="2"' in listing.text
    other = await client.get(f"/portal/channels?test_job={tenant_a.job.id}")  # a job of another kind
    assert "Open the job" not in other.text
    bogus = await client.get("/portal/channels?test_job=nope")
    assert bogus.status_code == 400
    assert "No such test run." in bogus.text
    user_token = await sign_in(client, tenant_a, tenant_a.user.email)
    assert (await client.post("/portal/channels/test-all", data={"csrf_token": user_token})).status_code == 403


async def test_the_list_filters_by_text_status_type_and_scope_from_the_address(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.admin)
    await add_channel(client, headers, upstream, "openai main", models=["gpt-4o", "gpt-4o-mini"], kind="openai")
    await add_channel(client, headers, upstream, "claude", models=["claude-x"], kind="anthropic")
    team = await add_channel(
        client, headers, upstream, "team_50%", models=["gpt-4o"], scope="group", group_id=str(tenant_a.group.id)
    )
    assert (await client.post(f"/api/channels/{team['id']}/disable", headers=headers)).status_code == 201
    await sign_in(client, tenant_a, tenant_a.admin.email)

    async def names(query: str) -> list[str]:
        response = await client.get(f"/portal/channels?{query}")
        assert response.status_code == 200, response.text
        return listed(response.text)

    assert await names("") == ["claude", "openai main", "team_50%"]
    assert await names("q=4O-MINI") == ["openai main"]
    assert await names("q=gpt-4o") == ["openai main", "team_50%"]
    assert await names("q=50%25") == ["team_50%"]
    assert await names("q=_") == ["team_50%"]  # a literal underscore, not a wildcard
    assert await names("status=disabled") == ["team_50%"]
    assert await names("status=enabled&type=anthropic") == ["claude"]
    assert await names("scope=group") == ["team_50%"]
    assert await names("scope=tenant&q=gpt") == ["openai main"]
    kept = await client.get("/portal/channels?q=gpt&status=enabled&scope=tenant")
    assert 'value="gpt"' in kept.text
    assert (selected(kept.text, "status"), selected(kept.text, "scope")) == ("enabled", "tenant")
    none = await client.get("/portal/channels?q=nothing-like-it")
    assert "No channel matches these filters." in none.text
    bad = await client.get("/portal/channels?status=sleeping&q=" + "x" * 101)
    assert bad.status_code == 400
    assert field_error(bad.text, "status") == "&#39;sleeping&#39; is not one of the choices."
    assert field_error(bad.text, "q") == "At most 100 characters."
    assert len(listed(bad.text)) == 3  # a wrong filter shows the whole list, with the message


async def test_clone_prefills_the_form_and_keeps_the_source_keys_only_when_none_are_typed(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    source = await add_channel(
        client,
        auth_headers(tenant_a.admin),
        upstream,
        "primary",
        models=["a", "b"],
        model_mapping={"a": "upstream-a"},
        priority=7,
        weight=3,
        rate_limit=60,
        scope="group",
        group_id=str(tenant_a.group.id),
    )
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = await client.get(f"/portal/channels/new?clone={source['id']}")
    assert form.status_code == 200
    assert 'value="primary (copy)"' in form.text
    assert f'<input type="hidden" name="keys_from" value="{source["id"]}">' in form.text
    assert textarea(form.text, "models") == "a\nb"
    assert textarea(form.text, "model_mapping") == "a=upstream-a"
    assert textarea(form.text, "keys") == ""
    assert "Leave empty to keep the keys of the channel this is cloned from" in form.text
    assert "key-of-primary" not in form.text
    assert (selected(form.text, "scope"), selected(form.text, "group_id")) == ("group", str(tenant_a.group.id))
    assert 'id="priority" name="priority" type="number" value="7"' in form.text

    post = {
        "csrf_token": token,
        "keys_from": source["id"],
        "type": "openai-compatible",
        "base_url": upstream.base_url("primary"),
        "models": "a\nb",
        "scope": "group",
        "group_id": str(tenant_a.group.id),
    }
    assert (await client.post("/portal/channels/new", data=post | {"name": "kept keys"})).status_code == 303
    replaced = post | {"name": "new keys", "keys": "sk-fresh"}
    assert (await client.post("/portal/channels/new", data=replaced)).status_code == 303
    theirs = await add_channel(client, auth_headers(tenant_b.admin), upstream, "theirs")
    stolen = await client.post("/portal/channels/new", data=post | {"name": "stolen", "keys_from": theirs["id"]})
    assert stolen.status_code == 404
    assert field_error(stolen.text, "keys_from") == "keys_from: no channel of this organization has this id."
    assert (await client.get(f"/portal/channels/new?clone={theirs['id']}")).status_code == 404

    box = SecretBox(settings.encryption_keyring)
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = {row.name: row for row in await session.scalars(select(Channel))}
    assert sorted(rows) == ["kept keys", "new keys", "primary"]

    def keys(name: str) -> list[str]:
        row = rows[name]
        return list(msgspec.json.decode(box.decrypt(row.encrypted_keys, context=channel_keys_context(row.tenant_id))))

    assert keys("kept keys") == ["key-of-primary"]
    assert keys("new keys") == ["sk-fresh"]
    assert rows["kept keys"].config_scope == "group"
