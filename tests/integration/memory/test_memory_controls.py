"""The controls memory users ask for: expiry and pruning, agent and run scopes, filters with operators,
categories, all-or-nothing batches, adding for a user as an admin, and contradictions that link the newer truth."""

from __future__ import annotations

import datetime
import json
from typing import Any
from uuid import UUID

import httpx
import pytest
import sqlalchemy.exc
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.registry import SCHEDULED_TASKS, WorkerServices
from app.memory.tasks import prune_expired_memories
from app.settings import Settings
from db.memory import Memory, MemoryAssociation
from db.session import tenant_session
from db.tenant import AuditEvent
from tests.support.clients import AuthHeaders, Client
from tests.support.memory import configure_memory, decisions, extract
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

UTC = datetime.UTC


def later(**delta: float) -> str:
    return (datetime.datetime.now(UTC) + datetime.timedelta(**delta)).isoformat()


async def add(client: Client, headers: dict[str, str], text: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/memories", json={"text": text, "infer": False, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def batch(client: Client, headers: dict[str, str], *items: dict[str, Any], **fields: Any) -> httpx.Response:
    return await client.post("/api/memories/batch", json={"memories": list(items), **fields}, headers=headers)


async def listed(client: Client, headers: dict[str, str], **params: Any) -> list[str]:
    response = await client.get("/api/memories", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return sorted(memory["text"] for memory in response.json())


async def searched(client: Client, headers: dict[str, str], filters: dict[str, Any], query: str = "x") -> list[str]:
    response = await client.post(
        "/api/memories/search", json={"query": query, "limit": 100, "filters": filters}, headers=headers
    )
    assert response.status_code == 200, response.text
    return sorted(hit["memory"]["text"] for hit in response.json())


async def count_memories(session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID, user_id: UUID) -> int:
    async with tenant_session(session_maker, tenant_id) as session:
        return int(await session.scalar(select(func.count()).where(Memory.user_id == user_id)) or 0)


async def test_expired_memories_are_never_read_and_the_prune_job_deletes_them_in_every_tenant(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    past = await client.post(
        "/api/memories", json={"text": "Parks on level 3", "infer": False, "expires_at": later(hours=-1)}, headers=user
    )
    assert past.status_code == 400
    assert "expires_at" in past.text
    batch_past = await batch(client, user, {"text": "a"}, {"text": "b", "expires_at": later(seconds=-5)})
    assert batch_past.status_code == 400
    assert "memories[1].expires_at" in batch_past.text

    parking = await add(client, user, "Parks on level 3 today", expires_at=later(hours=1), agent_id="car")
    assert parking["expires_at"] is not None
    await add(client, user, "Parks a blue car", agent_id="car")
    lot = await add(client, user, "Parks in lot B", expires_at=later(hours=1))
    other_tenant = auth_headers(tenant_b.admin)
    await configure_memory(client, other_tenant, upstream)
    elsewhere = await add(client, other_tenant, "Parks on level 9 today", expires_at=later(hours=1))
    assert await searched(client, user, {"agent_id": "car"}, "parks level") == [
        "Parks a blue car",
        "Parks on level 3 today",
    ]

    # Time passes: both timed memories expire (set in the database, as the clock would).
    for tenant_id, memory_id in (
        (tenant_a.id, parking["id"]),
        (tenant_a.id, lot["id"]),
        (tenant_b.id, elsewhere["id"]),
    ):
        async with tenant_session(session_maker, tenant_id) as session:
            await session.execute(
                update(Memory)
                .where(Memory.id == UUID(memory_id))
                .values(expires_at=datetime.datetime.now(UTC) - datetime.timedelta(seconds=1))
            )
            await session.commit()
    assert await searched(client, user, {"agent_id": "car"}, "parks level") == ["Parks a blue car"]
    assert await listed(client, user, agent_id="car") == ["Parks a blue car"]
    assert await listed(client, user, agent_id="car", include_invalidated=True) == ["Parks a blue car"]
    # An expired memory does not block its fact coming back.
    again = await add(client, user, "Parks on level 3 today")
    assert again["id"] != parking["id"]
    assert again["expires_at"] is None

    assert SCHEDULED_TASKS["memory.prune"].cron_for(worker_services.settings)
    await add(client, user, "Parks on level 5 tomorrow", expires_at=later(hours=2))
    # Lot B here and the other tenant's (the expired "level 3" went when its text was added again).
    assert await prune_expired_memories(worker_services) == {"pruned": 2}
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.get(Memory, UUID(elsewhere["id"])) is None
        audit = await session.scalar(select(AuditEvent).where(AuditEvent.action == "memory.pruned"))
        assert audit is not None
        assert audit.details == {"count": 1}
    async with tenant_session(session_maker, tenant_a.id) as session:
        texts = set(await session.scalars(select(Memory.memory_text).where(Memory.user_id == tenant_a.user.id)))
    assert {"Parks a blue car", "Parks on level 3 today", "Parks on level 5 tomorrow"} <= texts
    assert "Parks in lot B" not in texts


async def test_every_filter_applies_to_both_search_legs_and_to_the_listing(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    created = await batch(
        client,
        user,
        {"text": "Score five note", "metadata": {"score": 5, "tag": "a"}, "category": "work", "agent_id": "bot"},
        {"text": "Score twelve note", "metadata": {"score": 12.5, "tag": "b"}, "category": "home", "agent_id": "bot"},
        {"text": "Score word note", "metadata": {"score": "high", "tag": "c"}, "agent_id": "bot", "run_id": "r1"},
        {"text": "Dated march note", "metadata": {"when": "2026-03-01"}, "agent_id": "bot", "run_id": "r1"},
        {"text": "Dated may note", "metadata": {"when": "2026-05-01T10:00:00+00:00"}, "agent_id": "bot"},
        {"text": "Dated never note", "metadata": {"when": "not a date"}, "agent_id": "bot"},
        {"text": "Other agent note", "metadata": {"score": 5}, "agent_id": "helper"},
    )
    assert created.status_code == 201, created.text
    assert [memory["text"] for memory in created.json()][:2] == ["Score five note", "Score twelve note"]
    # The admin's own memory matches every condition below: it must never come back for the user.
    await add(client, admin, "Score five admin note", metadata={"score": 5}, agent_id="bot")

    def bot(**filters: Any) -> dict[str, Any]:
        return {"agent_id": "bot", **filters}

    cases: list[tuple[dict[str, Any], list[str]]] = [
        (bot(metadata={"score": 5}), ["Score five note"]),
        (bot(metadata={"score": {"eq": 5}}), ["Score five note"]),
        (
            bot(metadata={"tag": {"ne": "a"}}),
            ["Dated march note", "Dated may note", "Dated never note", "Score twelve note", "Score word note"],
        ),
        (bot(metadata={"tag": {"in": ["a", "c"]}}), ["Score five note", "Score word note"]),
        (
            bot(metadata={"tag": {"nin": ["a", "b"]}}),
            ["Dated march note", "Dated may note", "Dated never note", "Score word note"],
        ),
        # A range on numbers: the word "high" is neither matched nor an error.
        (bot(metadata={"score": {"gt": 5}}), ["Score twelve note"]),
        (bot(metadata={"score": {"gte": 5, "lt": 12.5}}), ["Score five note"]),
        (bot(metadata={"score": {"lte": 100}}), ["Score five note", "Score twelve note"]),
        # A range on dates: a date and a date-time compare; "not a date" is not matched.
        (bot(metadata={"when": {"gte": "2026-03-01"}}), ["Dated march note", "Dated may note"]),
        (bot(metadata={"when": {"gt": "2026-03-01T00:00:00Z", "lt": "2026-06-01"}}), ["Dated may note"]),
        (bot(metadata={"when": {"lt": "2026-04-01"}}), ["Dated march note"]),
        (bot(categories=["work", "home"]), ["Score five note", "Score twelve note"]),
        (bot(category="home"), ["Score twelve note"]),
        (bot(run_id="r1"), ["Dated march note", "Score word note"]),
        ({"agent_id": "helper"}, ["Other agent note"]),
        (
            bot(created_after=later(hours=-1), created_before=later(hours=1), metadata={"tag": "b"}),
            ["Score twelve note"],
        ),
        (bot(created_after=later(minutes=5)), []),
    ]
    for filters, expected in cases:
        # "note" matches every memory by its words, the vector leg has no threshold: both legs are filtered.
        assert await searched(client, user, filters, "note") == expected, filters
        assert await searched(client, user, filters, "zzz unrelated") == expected, filters
        params: dict[str, Any] = {
            key: json.dumps(value) if key == "metadata" else value
            for key, value in filters.items()
            if key not in ("categories", "category")
        }
        if "categories" in filters or "category" in filters:
            params["category"] = filters.get("categories") or [filters["category"]]
        assert await listed(client, user, **params) == expected, filters
    # The admin, naming the user, gets the user's memories only.
    as_admin = await client.post(
        "/api/memories/search",
        json={"query": "note", "filters": bot(metadata={"score": 5}), "user_id": str(tenant_a.user.id)},
        headers=admin,
    )
    assert [hit["memory"]["text"] for hit in as_admin.json()] == ["Score five note"]


async def test_bad_filters_and_fields_are_refused_naming_the_field(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    bad_filters: list[tuple[dict[str, Any], str]] = [
        ({"metadata": {"score": {"between": [1, 2]}}}, "unknown operator 'between'"),
        ({"metadata": {"score": {"gt": "soon"}}}, "'gt' takes a number or an ISO date"),
        ({"metadata": {"score": {"gt": True}}}, "'gt' takes a number"),
        ({"metadata": {"score": {"lt": [1]}}}, "'lt' takes a number"),
        ({"metadata": {"score": {"in": "a"}}}, "'in' takes a list"),
        ({"metadata": {"score": {"nin": []}}}, "'nin' takes a list"),
        ({"metadata": {"score": {}}}, "no operator"),
        ({"metadata": {"a-b": 1}}, "not a plain identifier"),
        ({"metadata": {'x"||@': 1}}, "not a plain identifier"),
        ({"metadata": {f"k{n}": n for n in range(21)}}, "at most 20"),
        ({"metadata": "score"}, "metadata"),
        ({"agent_id": "x" * 101}, "agent_id"),
        ({"agent_id": "has space"}, "agent_id"),
        ({"run_id": 7}, "run_id"),
        ({"categories": []}, "categories"),
        ({"categories": ["x" * 51]}, "categories"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"unknown": 1}, "unknown"),
    ]
    for filters, named in bad_filters:
        response = await client.post("/api/memories/search", json={"query": "x", "filters": filters}, headers=user)
        assert response.status_code == 400, (filters, response.text)
        assert named in response.text, (filters, response.text)
    for params, named in (
        ({"metadata": "{not json"}, "metadata"),
        ({"metadata": json.dumps({"score": {"gt": "soon"}})}, "metadata"),
        ({"metadata": json.dumps([1])}, "metadata"),
        ({"agent_id": "x" * 101}, "agent_id"),
        ({"category": "x" * 51}, "category"),
        ({"created_before": "soon"}, "created_before"),
    ):
        response = await client.get("/api/memories", params=params, headers=user)
        assert response.status_code == 400, (params, response.text)
        assert named in response.text, (params, response.text)

    for fields, named in (
        ({"agent_id": ""}, "agent_id"),
        ({"run_id": "r" * 101}, "run_id"),
        ({"category": ""}, "category"),
        ({"category": "c" * 51}, "category"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": 5}, "expires_at"),
    ):
        response = await client.post("/api/memories", json={"text": "Bad one", "infer": False, **fields}, headers=user)
        assert response.status_code == 400, (fields, response.text)
        assert named in response.text, (fields, response.text)
    # Extraction checks the same fields before it queues anything.
    expired = await client.post(
        "/api/memories",
        json={"messages": [{"role": "user", "content": "hi"}], "expires_at": later(days=-1)},
        headers=user,
    )
    assert expired.status_code == 400
    assert "expires_at" in expired.text

    memory = await add(client, user, "Likes green tea")
    path = f"/api/memories/{memory['id']}"
    for body, named in (
        ({}, "text"),
        ({"expires_at": later(minutes=-1)}, "expires_at"),
        ({"category": "c" * 51}, "category"),
        ({"agent_id": "a"}, "agent_id"),
    ):
        response = await client.patch(path, json=body, headers=user)
        assert response.status_code == 400, (body, response.text)
        assert named in response.text, (body, response.text)
    changed = await client.patch(path, json={"category": "food", "expires_at": later(days=30)}, headers=user)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["category"], changed.json()["text"]) == ("food", "Likes green tea")
    assert changed.json()["expires_at"] is not None
    cleared = await client.patch(path, json={"expires_at": None, "category": None}, headers=user)
    assert (cleared.json()["expires_at"], cleared.json()["category"]) == (None, None)
    history = (await client.get(f"{path}/history", headers=user)).json()
    assert [row["event"] for row in history] == ["ADD"]  # the history is of what the memory says


async def test_a_batch_is_one_embedding_call_and_all_or_nothing(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    before = await count_memories(session_maker, tenant_a.id, tenant_a.user.id)
    await add(client, user, "Speaks French")

    refusals: list[tuple[list[dict[str, Any]], int, str]] = [
        ([{"text": "One"}, {"text": "one "}], 400, "memories[1].text"),
        ([{"text": "Two"}, {"text": "speaks  french"}], 409, "memories[1].text"),
        ([{"text": "Three"}, {"text": "Four", "agent_id": "no spaces allowed"}], 400, "memories[1].agent_id"),
        ([{"text": "Five"}, {"text": ""}], 400, "memories[1].text"),
        ([{"text": "Six", "importance": 101}], 400, "memories[0].importance"),
        ([], 400, "memories"),
        ([{"text": f"Item {n}"} for n in range(1001)], 400, "memories"),
    ]
    calls = upstream.calls["mem-embed"]
    for items, status, named in refusals:
        response = await batch(client, user, *items)
        assert response.status_code == status, (named, response.text)
        assert named in response.text, response.text
    assert upstream.calls["mem-embed"] == calls  # refused before anything was embedded
    assert (await batch(client, user, {"text": "x"}, user_id="not-a-uuid")).status_code == 400

    # The embedding model answers another size: nothing stored, the item named.
    upstream.behave("mem-embed", dimensions=128)
    resized = await batch(client, user, {"text": "Seven"}, {"text": "Eight"})
    assert resized.status_code == 409
    assert "memories[0]" in resized.text
    upstream.behave("mem-embed", dimensions=256)
    assert await count_memories(session_maker, tenant_a.id, tenant_a.user.id) == before + 1

    # Similar memories of one batch are linked to each other.
    pair = await batch(
        client,
        user,
        {"text": "Likes strong black coffee in the morning"},
        {"text": "Likes strong black coffee in the mornings"},
    )
    assert pair.status_code == 201, pair.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        linked = set(await session.scalars(select(MemoryAssociation.memory_id)))
    assert {UUID(memory["id"]) for memory in pair.json()} <= linked

    items = [
        {"text": f"Visited city number {n}", "category": "travel", "metadata": {"n": n}, "run_id": "trip"}
        for n in range(1000)
    ]
    calls = upstream.calls["mem-embed"]
    stored = await batch(client, user, *items)
    assert stored.status_code == 201, stored.text
    assert upstream.calls["mem-embed"] - calls == 1
    assert [memory["text"] for memory in stored.json()] == [item["text"] for item in items]
    assert {memory["embedding_dim"] for memory in stored.json()} == {256}
    assert await count_memories(session_maker, tenant_a.id, tenant_a.user.id) == before + 1003


async def test_an_admin_adds_for_a_user_of_the_tenant_only(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    for_user = await add(client, admin, "Needs a standing desk", user_id=str(tenant_a.user.id))
    assert for_user["user_id"] == str(tenant_a.user.id)
    history = (await client.get(f"/api/memories/{for_user['id']}/history", headers=user)).json()
    assert (history[0]["actor"], history[0]["actor_user_id"]) == ("admin", str(tenant_a.admin.id))
    in_batch = await batch(client, admin, {"text": "Works late"}, user_id=str(tenant_a.user.id))
    assert in_batch.status_code == 201
    assert in_batch.json()[0]["user_id"] == str(tenant_a.user.id)

    outsider = str(tenant_b.user.id)
    assert (
        await client.post("/api/memories", json={"text": "Stolen", "infer": False, "user_id": outsider}, headers=admin)
    ).status_code == 404
    assert (await batch(client, admin, {"text": "Stolen"}, user_id=outsider)).status_code == 404
    assert (
        await client.post(
            "/api/memories", json={"text": "Mine now", "infer": False, "user_id": str(tenant_a.admin.id)}, headers=user
        )
    ).status_code == 403
    assert (await batch(client, user, {"text": "Mine now"}, user_id=str(tenant_a.admin.id))).status_code == 403
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.scalar(select(func.count()).where(Memory.memory_text == "Stolen")) == 0


def facts(*items: dict[str, Any]) -> str:
    return json.dumps({"facts": list(items)})


async def test_a_contradiction_stores_the_new_fact_and_links_the_old_memory_to_it(
    client: Client,
    upstream: MockUpstream,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    # The scopes of the request reach the extracted memories; the model's category is kept.
    upstream.behave("mem-llm", replies=[facts({"text": "Lives in Berlin", "category": "home"})])
    first = await extract(client, user, settings, "I live in Berlin", agent_id="concierge", run_id="s-1")
    assert first["result"]["added"] == 1, first
    berlin = (await client.get("/api/memories", params={"agent_id": "concierge"}, headers=user)).json()[0]
    assert (berlin["text"], berlin["category"], berlin["run_id"]) == ("Lives in Berlin", "home", "s-1")

    upstream.behave(
        "mem-llm",
        replies=[
            facts({"text": "Lives in Munich"}),
            decisions({"id": "0", "event": "DELETE", "text": "Lives in Munich", "reason": "Moved."}),
        ],
    )
    moved = await extract(client, user, settings, "I moved to Munich", agent_id="concierge", category="address")
    assert (moved["result"]["added"], moved["result"]["invalidated"]) == (1, 1), (moved, upstream.bodies[-1])
    active = (await client.get("/api/memories", params={"agent_id": "concierge"}, headers=user)).json()
    assert [(memory["text"], memory["category"]) for memory in active] == [("Lives in Munich", "address")]
    munich = active[0]
    old = (await client.get(f"/api/memories/{berlin['id']}", headers=user)).json()["memory"]
    assert (old["status"], old["superseded_by"]) == ("invalidated", munich["id"])
    assert munich["id"] in old["invalidation_reason"]
    history = (await client.get(f"/api/memories/{berlin['id']}/history", headers=user)).json()
    assert [(row["event"], row["superseded_by"]) for row in history] == [("ADD", None), ("INVALIDATE", munich["id"])]
    assert history[1]["reason"].startswith("Moved.")
    assert munich["id"] in history[1]["reason"]

    # A pure deletion ends the old memory and adds nothing (the admin's fixture memories are neighbours too).
    upstream.behave(
        "mem-llm",
        replies=[
            facts({"text": "Has a dog named Rex"}),
            decisions({"id": "new", "event": "ADD", "text": "Has a dog named Rex"}),
        ],
    )
    dog = await extract(client, admin, settings, "I have a dog named Rex")
    assert dog["result"]["added"] == 1, dog
    upstream.behave(
        "mem-llm",
        replies=[
            facts({"text": "No longer has a dog"}),
            decisions({"id": "0", "event": "DELETE", "reason": "The dog is gone."}),
        ],
    )
    gone = await extract(client, admin, settings, "I no longer have a dog")
    shown = json.loads(upstream.bodies[-1][1]["messages"][1]["content"])["existing_memories"]
    assert shown[0]["text"] == "Has a dog named Rex"  # the closest, shown first: what "0" named
    assert (gone["result"]["added"], gone["result"]["invalidated"]) == (0, 1), gone
    everything = (await client.get("/api/memories", params={"include_invalidated": True}, headers=admin)).json()
    assert sorted((m["text"], m["status"], m["superseded_by"]) for m in everything) == [
        ("Has a dog named Rex", "invalidated", None),
        ("Likes green tea", "active", None),
        ("Likes tea", "active", None),
    ]

    # Erasing the newer memory leaves the older one invalidated, without its link.
    assert (await client.delete(f"/api/memories/{munich['id']}", headers=user)).status_code == 204
    assert (await client.get(f"/api/memories/{berlin['id']}", headers=user)).json()["memory"]["superseded_by"] is None

    # A link never crosses tenants: the foreign key is within the tenant.
    async with tenant_session(session_maker, tenant_a.id) as session:
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            await session.execute(
                update(Memory).where(Memory.id == tenant_a.memory.id).values(superseded_by=tenant_b.memory.id)
            )
    # Nor can another tenant read the new columns of this tenant's memories.
    outsider = auth_headers(tenant_b.admin)
    assert (await client.get(f"/api/memories/{berlin['id']}", headers=outsider)).status_code == 404
    assert (
        await client.patch(f"/api/memories/{berlin['id']}", json={"category": "x"}, headers=outsider)
    ).status_code == 404
    assert (await client.get("/api/memories", params={"agent_id": "concierge"}, headers=outsider)).json() == []
