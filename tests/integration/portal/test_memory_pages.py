"""Memories a person controls in the portal: add by hand, correct (history kept), see the source, and why
conversations add none when no extraction model is set."""

from __future__ import annotations

import html
import re
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.memory import Memory, MemoryHistory
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.memory import configure_memory
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

NO_EXTRACTION = "Memory is on, but no extraction model is set"


async def sign_out_and_in_as_admin(client: Client, tenant: TenantRows) -> None:
    client.cookies.clear()
    await sign_in(client, tenant, tenant.admin.email)


async def memory_count(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, user_id: UUID) -> int:
    async with tenant_session(session_maker, tenant.id) as session:
        return int(await session.scalar(select(func.count()).select_from(Memory).where(Memory.user_id == user_id)) or 0)


async def test_a_user_adds_a_memory_by_hand_and_corrects_it_with_the_old_text_kept(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    added = await client.post(
        "/portal/memories/new",
        data={"csrf_token": token, "text": "  Prefers window seats  ", "memory_type": "preference", "importance": "70"},
    )
    assert added.status_code == 303, added.text
    memory_id = re.fullmatch(r"/portal/memories/([0-9a-f-]{36})", added.headers["location"])
    assert memory_id
    detail = await client.get(added.headers["location"])
    assert "Prefers window seats" in detail.text
    assert "written by hand or through the API" in detail.text

    corrected = await client.post(
        f"/portal/memories/{memory_id[1]}/edit", data={"csrf_token": token, "text": "Prefers aisle seats"}
    )
    assert corrected.status_code == 303, corrected.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        memory = await session.get_one(Memory, UUID(memory_id[1]))
        assert (memory.memory_text, memory.memory_type, memory.importance_score) == (
            "Prefers aisle seats",
            "preference",
            70,
        )
        events = list(
            await session.execute(
                select(MemoryHistory.event, MemoryHistory.old_text, MemoryHistory.new_text)
                .where(MemoryHistory.memory_id == memory.id)
                .order_by(MemoryHistory.created_at)
            )
        )
    assert [tuple(row) for row in events] == [
        ("ADD", None, "Prefers window seats"),
        ("UPDATE", "Prefers window seats", "Prefers aisle seats"),
    ]


async def test_bad_input_on_the_memory_forms_is_named_and_nothing_is_saved(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    cases = [
        ({"text": "   "}, "text", "This field is required."),
        ({"text": "x" * 2001}, "text", "At most 2000 characters."),
        ({"text": "Has a cat", "importance": "many"}, "importance", "Enter a whole number."),
        ({"text": "Has a cat", "importance": "0"}, "importance", "At least 1."),
        ({"text": "Has a cat", "memory_type": "dream"}, "memory_type", "'dream' is not one of the choices."),
    ]
    for fields, field, message in cases:
        response = await client.post("/portal/memories/new", data={"csrf_token": token, **fields})
        assert response.status_code == 400, (fields, response.status_code)
        assert html.unescape(field_error(response.text, field) or "") == message, fields
    assert await memory_count(session_maker, tenant_a, tenant_a.user.id) == 0

    first = await client.post("/portal/memories/new", data={"csrf_token": token, "text": "Has a cat"})
    assert first.status_code == 303
    twice = await client.post("/portal/memories/new", data={"csrf_token": token, "text": "has a  cat"})
    assert twice.status_code == 409
    assert field_error(twice.text, "text") == "This memory is already there."
    assert await memory_count(session_maker, tenant_a, tenant_a.user.id) == 1

    memory_path = first.headers["location"]
    empty = await client.post(f"{memory_path}/edit", data={"csrf_token": token, "text": ""})
    assert empty.status_code == 400
    assert field_error(empty.text, "text") == "This field is required."
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Memory.memory_text).where(Memory.user_id == tenant_a.user.id)) == "Has a cat"


async def test_an_admin_adds_a_memory_for_a_user_but_only_the_owner_corrects_it(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    added = await client.post(
        "/portal/memories/new",
        data={"csrf_token": token, "text": "Is on call on Mondays", "user_id": str(tenant_a.user.id)},
    )
    assert added.status_code == 303, added.text
    assert await memory_count(session_maker, tenant_a, tenant_a.user.id) == 1
    memory_path = added.headers["location"]
    # A memory is corrected by the person it is about: another's is not found, even for an admin.
    assert (await client.get(f"{memory_path}/edit")).status_code == 404
    refused = await client.post(f"{memory_path}/edit", data={"csrf_token": token, "text": "Never on call"})
    assert refused.status_code == 404
    # Another tenant's user is not a user of this organization.
    foreign = await client.post(
        "/portal/memories/new", data={"csrf_token": token, "text": "Hacked", "user_id": str(tenant_b.user.id)}
    )
    assert foreign.status_code == 404
    assert await memory_count(session_maker, tenant_a, tenant_a.user.id) == 1


async def test_an_end_user_cannot_add_a_memory_for_someone_else(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession], auth_headers: AuthHeaders
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.post(
        "/portal/memories/new", data={"csrf_token": token, "text": "Likes spam", "user_id": str(tenant_a.admin.id)}
    )
    assert response.status_code == 403
    api = await client.post(
        "/api/memories",
        json={"text": "Likes spam", "infer": False, "user_id": str(tenant_a.admin.id)},
        headers=auth_headers(tenant_a.user),
    )
    assert api.status_code == 403
    assert await memory_count(session_maker, tenant_a, tenant_a.admin.id) == 2  # the fixture's two, no more


async def test_the_api_lets_an_admin_add_a_memory_for_a_user(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post(
        "/api/memories",
        json={"text": "Speaks Portuguese", "infer": False, "user_id": str(tenant_a.user.id)},
        headers=auth_headers(tenant_a.admin),
    )
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == str(tenant_a.user.id)
    async with tenant_session(session_maker, tenant_a.id) as session:
        actor = await session.scalar(
            select(MemoryHistory.actor).where(MemoryHistory.memory_id == UUID(response.json()["id"]))
        )
    assert actor == "admin"


async def test_the_memory_pages_say_when_conversations_add_no_memories(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, upstream: MockUpstream
) -> None:
    await sign_in(client, tenant_a, tenant_a.user.email)
    as_user = (await client.get("/portal/memories")).text
    assert NO_EXTRACTION in as_user
    assert "An administrator can change this in Settings." in as_user
    assert NO_EXTRACTION in (await client.get("/portal/memories/new")).text
    assert NO_EXTRACTION in (await client.get("/portal/chat")).text
    await sign_out_and_in_as_admin(client, tenant_a)
    assert 'href="/portal/settings#defaults">Change this in Settings</a>' in (await client.get("/portal/chat")).text
    assert NO_EXTRACTION in (await client.get("/portal/settings")).text
    await configure_memory(client, auth_headers(tenant_a.admin), upstream)
    assert NO_EXTRACTION not in (await client.get("/portal/settings")).text
    assert NO_EXTRACTION not in (await client.get("/portal/memories")).text
    assert NO_EXTRACTION not in (await client.get("/portal/chat")).text
    turned_off = await client.put(
        "/api/memories/settings", json={"enabled": False}, headers=auth_headers(tenant_a.admin)
    )
    assert turned_off.status_code == 200, turned_off.text
    assert "Memory is turned off" in (await client.get("/portal/memories")).text
