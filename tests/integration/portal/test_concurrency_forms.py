"""Concurrency limits set in the portal: a channel's calls in flight, a key's and a user's concurrent requests
and streams; bad input is shown next to its field and saves nothing, empty means no limit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import ApiToken, Channel
from db.session import tenant_session
from db.tenant import Budget
from tests.support.clients import Client
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


async def test_a_channels_max_in_flight_in_its_form(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert 'name="max_in_flight"' in (await client.get("/portal/channels/new")).text
    base = {
        "csrf_token": token,
        "type": "openai-compatible",
        "base_url": upstream.base_url("p"),
        "keys": "k",
        "name": "primary",
        "models": "gpt-test",
    }
    for typed, message in (("-1", "At least 0."), ("many", "Enter a whole number."), ("100001", "At most 100000.")):
        refused = await client.post("/portal/channels/new", data=base | {"max_in_flight": typed})
        assert refused.status_code == 400
        assert field_error(refused.text, "max_in_flight") == message
        assert f'value="{typed}"' in refused.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(Channel))) == []

    created = await client.post("/portal/channels/new", data=base | {"max_in_flight": "4"})
    assert created.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel = (await session.scalars(select(Channel))).one()
    assert channel.max_in_flight == 4
    edit = await client.get(f"/portal/channels/{channel.id}")
    assert 'name="max_in_flight" type="number" value="4"' in edit.text
    emptied = await client.post(f"/portal/channels/{channel.id}", data=base | {"max_in_flight": ""})
    assert emptied.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Channel.max_in_flight)) == 0


async def test_a_keys_concurrent_requests_and_streams_in_its_form(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    base = {"csrf_token": token, "name": "bounded"}
    refused = await client.post("/portal/tokens/new", data=base | {"max_concurrent": "two", "max_streams": "-1"})
    assert refused.status_code == 400
    assert field_error(refused.text, "max_concurrent") == "Enter a whole number."
    assert field_error(refused.text, "max_streams") == "At least 0."
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(ApiToken).where(ApiToken.name == "bounded")) is None

    issued = await client.post("/portal/tokens/new", data=base | {"max_concurrent": "2", "max_streams": "1"})
    assert issued.status_code == 200, issued.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        key = (await session.scalars(select(ApiToken).where(ApiToken.name == "bounded"))).one()
    assert (key.max_concurrent, key.max_streams) == (2, 1)
    listed = (await client.get("/portal/tokens/")).text
    assert "2 at once" in listed
    assert "1 streams" in listed
    edit = await client.get(f"/portal/tokens/{key.id}")
    assert 'name="max_concurrent" type="number" value="2"' in edit.text
    changed = await client.post(f"/portal/tokens/{key.id}", data=base | {"max_concurrent": "", "max_streams": "3"})
    assert changed.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        row = await session.get_one(ApiToken, key.id)
        assert (row.max_concurrent, row.max_streams) == (0, 3)


async def test_a_users_concurrency_in_the_budget_form_and_not_a_groups(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    path = f"/portal/users/{tenant_a.user.id}/budget"
    refused = await client.post(path, data={"csrf_token": token, "max_concurrent": "1.5", "max_streams": "100001"})
    assert refused.status_code == 400
    assert field_error(refused.text, "max_concurrent") == "Enter a whole number."
    assert field_error(refused.text, "max_streams") == "At most 100000."
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(Budget))) == []

    saved = await client.post(path, data={"csrf_token": token, "max_concurrent": "3", "max_streams": "2"})
    assert saved.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        row = (await session.scalars(select(Budget))).one()
    assert (row.kind, row.max_concurrent, row.max_streams) == ("user", 3, 2)
    shown = (await client.get(saved.headers["location"])).text
    assert 'name="max_concurrent" type="number" value="3"' in shown
    group = (await client.get(f"/portal/groups/{tenant_a.group.id}")).text
    assert 'name="rpm_limit"' in group
    assert 'name="max_concurrent"' not in group
