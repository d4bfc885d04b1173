"""Memory end to end: extraction decisions scripted on the mock upstream, hybrid search, isolation, bad input."""

from __future__ import annotations

import json
from uuid import uuid4

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.memory import Memory
from db.session import tenant_session
from db.tenant import Job
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.jobs import events_of, running_worker, wait_for_status
from tests.support.memory import configure_memory, decisions, extract
from tests.support.mock_upstream import MockUpstream, word_vector
from tests.support.tenants import TenantRows


def facts(*texts: str, kind: str = "fact") -> str:
    return json.dumps({"facts": [{"text": text, "type": kind} for text in texts]})


async def active_texts(client: Client, headers: dict[str, str]) -> list[str]:
    return sorted(memory["text"] for memory in (await client.get("/api/memories", headers=headers)).json())


async def test_memory_decisions_add_update_invalidate_ignore_and_reject_invented_ids(
    client: Client, upstream: MockUpstream, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)

    upstream.behave("mem-llm", replies=[facts("Prefers tea over coffee", kind="preference")])
    first = await extract(client, user, settings, "I really prefer tea to coffee")
    assert (first["status"], first["result"]["added"]) == ("succeeded", 1), first
    assert await active_texts(client, user) == ["Prefers tea over coffee"]

    # A changed preference: the model names the existing memory by the alias it was shown ("0").
    upstream.behave(
        "mem-llm",
        replies=[
            facts("Prefers coffee over tea", kind="preference"),
            decisions({"id": "0", "event": "UPDATE", "text": "Prefers coffee over tea", "reason": "taste changed"}),
        ],
    )
    second = await extract(client, user, settings, "These days I prefer coffee")
    assert second["result"]["updated"] == 1, second
    shown = json.loads(upstream.bodies[-1][1]["messages"][1]["content"])
    assert shown["existing_memories"] == [{"id": "0", "text": "Prefers tea over coffee"}]
    assert await active_texts(client, user) == ["Prefers coffee over tea"]
    memory = (await client.get("/api/memories", headers=user)).json()[0]
    history = (await client.get(f"/api/memories/{memory['id']}/history", headers=user)).json()
    assert [(row["event"], row["old_text"], row["new_text"]) for row in history] == [
        ("ADD", None, "Prefers tea over coffee"),
        ("UPDATE", "Prefers tea over coffee", "Prefers coffee over tea"),
    ]
    assert history[1]["job_id"] == second["id"]

    # An invented id is rejected and logged; the rest of the answer is applied.
    upstream.behave(
        "mem-llm",
        replies=[
            facts("Lives in Berlin"),
            decisions({"id": "new", "event": "ADD", "text": "Lives in Berlin"}, {"id": "7", "event": "DELETE"}),
        ],
    )
    third = await extract(client, user, settings, "I live in Berlin")
    assert (third["result"]["added"], third["result"]["rejected"], third["result"]["invalidated"]) == (1, 1, 0)
    assert any("'7'" in (event["message"] or "") for event in events_of(third, "log"))
    assert await active_texts(client, user) == ["Lives in Berlin", "Prefers coffee over tea"]

    # A contradiction invalidates (keeps, with the reason) instead of erasing.
    upstream.behave(
        "mem-llm",
        replies=[
            facts("Lives in Munich"),
            decisions(
                {"id": "0", "event": "DELETE", "reason": "moved to Munich"},
                {"id": "1", "event": "ADD", "text": "Lives in Munich"},
            ),
        ],
    )
    fourth = await extract(client, user, settings, "I moved to Munich")
    assert (fourth["result"]["invalidated"], fourth["result"]["added"]) == (1, 1), fourth
    assert await active_texts(client, user) == ["Lives in Munich", "Prefers coffee over tea"]
    everything = (await client.get("/api/memories", params={"include_invalidated": True}, headers=user)).json()
    berlin = next(memory for memory in everything if memory["text"] == "Lives in Berlin")
    assert (berlin["status"], berlin["invalidation_reason"]) == ("invalidated", "moved to Munich")

    # An exact repeat stops at the hash: no decision is asked for. A known fact gets NONE.
    upstream.behave(
        "mem-llm",
        replies=[facts("lives in  munich"), facts("Resides in Munich"), decisions({"id": "0", "event": "NONE"})],
    )
    calls_before = upstream.calls["mem-llm"]
    repeat = await extract(client, user, settings, "Munich is where I live")
    assert (repeat["result"]["duplicates"], upstream.calls["mem-llm"] - calls_before) == (1, 1)
    known = await extract(client, user, settings, "I reside in Munich")
    assert (known["result"]["unchanged"], known["result"]["added"]) == (1, 0), known
    assert await active_texts(client, user) == ["Lives in Munich", "Prefers coffee over tea"]


async def test_malformed_json_is_asked_again_once_then_fails_visibly_with_nothing_stored(
    client: Client, upstream: MockUpstream, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    upstream.behave("mem-llm", replies=["Sure! The user likes jazz.", facts("Likes jazz")])
    recovered = await extract(client, user, settings, "I like jazz")
    assert (recovered["status"], recovered["result"]["added"]) == ("succeeded", 1)

    upstream.behave("mem-llm", replies=["Here you go: facts are jazz", '{"facts": "jazz"}'])
    failed = await extract(client, user, settings, "I also like blues")
    assert failed["status"] == "failed", failed
    assert "twice" in failed["last_error"]
    answers = [event["data"].get("answer") for event in events_of(failed, "log")]
    assert answers == ["Here you go: facts are jazz", '{"facts": "jazz"}']
    assert await active_texts(client, user) == ["Likes jazz"]


async def test_search_ranks_by_meaning_and_words_and_scores_are_similarities(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    for text in ("Allergic to peanuts and cashews", "Plays the violin on weekends", "Works as a nurse in Lyon"):
        stored = await client.post("/api/memories", json={"text": text, "infer": False}, headers=user)
        assert stored.status_code == 201, stored.text
        assert stored.json()["embedding_dim"] == 256
    # The admin's own memory and another tenant's say the same thing: neither may ever come back.
    assert (
        await client.post("/api/memories", json={"text": "Allergic to peanuts", "infer": False}, headers=admin)
    ).status_code == 201
    other_admin = auth_headers(tenant_b.admin)
    await configure_memory(client, other_admin, upstream)
    assert (
        await client.post("/api/memories", json={"text": "Allergic to peanuts", "infer": False}, headers=other_admin)
    ).status_code == 201

    found = await client.post("/api/memories/search", json={"query": "peanuts allergy", "limit": 5}, headers=user)
    assert found.status_code == 200  # a search creates nothing
    hits = found.json()
    assert hits[0]["memory"]["text"] == "Allergic to peanuts and cashews"
    assert {hit["memory"]["user_id"] for hit in hits} == {str(tenant_a.user.id)}
    scores = [hit["score"] for hit in hits]
    assert 0 < scores[0] <= 1
    assert scores[0] == max(scores)  # higher is closer: not a distance
    # The admin may search the user's memories, and only gets the user's.
    as_admin = await client.post(
        "/api/memories/search", json={"query": "peanuts", "user_id": str(tenant_a.user.id)}, headers=admin
    )
    assert {hit["memory"]["user_id"] for hit in as_admin.json()} == {str(tenant_a.user.id)}
    # A user may not name another user.
    refused = await client.post(
        "/api/memories/search", json={"query": "peanuts", "user_id": str(tenant_a.admin.id)}, headers=user
    )
    assert refused.status_code == 403


async def test_the_openapi_entries_of_adding_and_searching_memories_list_what_they_answer(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    added = paths["/api/memories"]["post"]["responses"]
    assert {"201", "202", "400", "409"} <= set(added)
    bodies = {
        status: added[status]["content"]["application/json"]["schema"]["$ref"] for status in ("201", "202", "409")
    }
    assert bodies == {
        "201": "#/components/schemas/MemoryRead",
        "202": "#/components/schemas/JobRead",
        "409": "#/components/schemas/ErrorBody",
    }
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"status_code", "detail", "request_id"}
    assert {"200", "400"} <= set(paths["/api/memories/search"]["post"]["responses"])
    assert "201" not in paths["/api/memories/search"]["post"]["responses"]


async def test_memory_bad_input_and_other_users_memories(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    assert (await client.post("/api/memories", json={"text": "", "infer": False}, headers=user)).status_code == 400
    both = await client.post(
        "/api/memories", json={"text": "x", "messages": [{"role": "user", "content": "y"}]}, headers=user
    )
    assert both.status_code == 400
    stored = (
        await client.post("/api/memories", json={"text": "Owns a red bicycle", "infer": False}, headers=user)
    ).json()
    duplicate = await client.post("/api/memories", json={"text": "owns a  RED bicycle", "infer": False}, headers=user)
    assert duplicate.status_code == 409

    # The embedding model starts answering with another size: refused, nothing stored.
    upstream.behave("mem-embed", dimensions=128)
    resized = await client.post("/api/memories", json={"text": "Owns a blue car", "infer": False}, headers=user)
    assert resized.status_code == 409
    assert "128" in resized.json()["detail"]
    upstream.behave("mem-embed", dimensions=256)

    path = f"/api/memories/{stored['id']}"
    outsider = auth_headers(tenant_b.admin)
    for route in (path, f"{path}/history"):
        assert (await client.get(route, headers=outsider)).status_code == 404
    assert (await client.patch(path, json={"text": "stolen"}, headers=outsider)).status_code == 404
    assert (await client.delete(path, headers=outsider)).status_code == 404
    # The tenant's admin reads and may erase it, but cannot rewrite the user's memory.
    assert (await client.get(path, headers=admin)).status_code == 200
    assert (await client.patch(path, json={"text": "changed by admin"}, headers=admin)).status_code == 404
    assert (
        await client.get("/api/memories", params={"user_id": str(tenant_a.admin.id)}, headers=user)
    ).status_code == 403

    corrected = await client.patch(path, json={"text": "Owns a green bicycle"}, headers=user)
    assert corrected.json()["text"] == "Owns a green bicycle"
    assert (await client.delete(path, headers=admin)).status_code == 204
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(Memory).where(Memory.user_id == tenant_a.user.id))) == []
    assert (await client.get(path, headers=user)).status_code == 404
    erased = await client.delete("/api/memories", headers=user)
    assert erased.json() == {"erased": 0}


def cosine(left: list[float], right: list[float]) -> float:
    return sum(a * b for a, b in zip(left, right, strict=True))  # word_vector's vectors are unit length


async def test_a_new_embedding_model_reembeds_every_memory_by_a_job_and_models_are_never_compared(
    client: Client,
    upstream: MockUpstream,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    # Turning embeddings on embeds the memories stored before: the fixture's two of the admin's.
    (first,) = (await client.get("/api/jobs", params={"kind": "memory.reembed"}, headers=admin)).json()
    async with running_worker(settings):
        first = await wait_for_status(client, admin, first["id"], {"succeeded", "failed", "dead"})
    assert first["result"] == {"reembedded": 2, "model": "embed-test"}
    for text in ("Prefers green tea in the morning", "Owns a red bicycle", "Works as a nurse in Leeds"):
        assert (
            await client.post("/api/memories", json={"text": text, "infer": False}, headers=user)
        ).status_code == 201
    async with tenant_session(session_maker, tenant_a.id) as session:
        active = await session.scalar(select(func.count()).where(Memory.status == "active"))

    await add_channel(client, admin, upstream, "mem-embed-new", models=["embed-new"])
    upstream.behave("mem-embed-new", dimensions=384)
    changed = await client.put(
        "/api/memories/settings", json={"llm_model": "memory-llm", "embedding_model": "embed-new"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    jobs = (await client.get("/api/jobs", params={"kind": "memory.reembed"}, headers=admin)).json()
    assert [job["status"] for job in jobs] == ["queued", "succeeded"]  # newest first

    # Until the job has run, the query (embedded by the new model) is not compared with old vectors:
    # the memory is found by its words, with no similarity to report.
    before = (await client.post("/api/memories/search", json={"query": "red bicycle"}, headers=user)).json()
    assert [(hit["memory"]["text"], hit["score"]) for hit in before] == [("Owns a red bicycle", None)]

    async with running_worker(settings):
        job = await wait_for_status(client, admin, jobs[0]["id"], {"succeeded", "failed", "dead"})
    assert (job["status"], job["result"]) == ("succeeded", {"reembedded": active, "model": "embed-new"})
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = (await session.execute(select(Memory.memory_text, Memory.embedding_model, Memory.embedding))).all()
    assert {(row.embedding_model, len(row.embedding)) for row in rows} == {("embed-new", 384)}
    for row in rows:
        assert cosine([float(value) for value in row.embedding], word_vector(row.memory_text, 384)) > 0.9999

    after = (await client.post("/api/memories/search", json={"query": "red bicycle"}, headers=user)).json()
    assert after[0]["memory"]["text"] == "Owns a red bicycle"
    expected = cosine(word_vector("red bicycle", 384), word_vector("Owns a red bicycle", 384))
    assert abs(after[0]["score"] - expected) < 1e-5

    # Saving the same model again has nothing to re-embed: no second job.
    again = await client.put(
        "/api/memories/settings", json={"llm_model": "memory-llm", "embedding_model": "embed-new"}, headers=admin
    )
    assert again.status_code == 200
    assert len((await client.get("/api/jobs", params={"kind": "memory.reembed"}, headers=admin)).json()) == 2


async def test_similar_memories_of_one_user_are_associated_both_ways_above_the_threshold(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await configure_memory(client, admin, upstream)
    assert (
        await client.put(
            "/api/memories/settings",
            json={"llm_model": "memory-llm", "embedding_model": "embed-test", "association_threshold": 0.8},
            headers=admin,
        )
    ).status_code == 200
    morning, evening, bicycle = "Likes green tea in the morning", "Likes green tea in the evening", "Owns a red bicycle"
    strength = cosine(word_vector(morning, 256), word_vector(evening, 256))
    assert strength >= 0.8 > cosine(word_vector(morning, 256), word_vector(bicycle, 256))  # the data's premise

    async def add(text: str, headers: dict[str, str]) -> str:
        response = await client.post("/api/memories", json={"text": text, "infer": False}, headers=headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def linked(memory_id: str) -> list[tuple[str, float]]:
        body = (await client.get(f"/api/memories/{memory_id}", headers=user)).json()
        return [(link["memory_id"], round(link["strength"], 5)) for link in body["associations"]]

    morning_id, evening_id, bicycle_id = await add(morning, user), await add(evening, user), await add(bicycle, user)
    assert await linked(evening_id) == [(morning_id, round(strength, 5))]
    assert await linked(morning_id) == [(evening_id, round(strength, 5))]
    assert await linked(bicycle_id) == []
    # The same words in another user's memory are never linked to this user's.
    admins_morning = await add(morning, admin)
    body = (await client.get(f"/api/memories/{admins_morning}", headers=admin)).json()
    assert body["associations"] == []


async def download(client: Client, path: str, headers: dict[str, str]) -> httpx.Response:
    redirect = await client.get(path, headers=headers)
    assert redirect.status_code == 303, redirect.text
    return await client.get(redirect.headers["location"])


async def test_memories_export_to_an_archive_and_import_back_without_duplicates(
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
    for text in ("Prefers green tea", "Owns a red bicycle"):
        assert (
            await client.post("/api/memories", json={"text": text, "infer": False}, headers=user)
        ).status_code == 201
    started = await client.post("/api/jobs", json={"kind": "memory.export"}, headers=user)
    assert started.status_code == 201, started.text
    async with running_worker(settings):
        job = await wait_for_status(client, user, started.json()["id"], {"succeeded", "failed", "dead"})
    assert (job["status"], job["result"]["memories"]) == ("succeeded", 2), job
    archive = (await download(client, f"/api/memories/exports/{job['id']}", user)).json()
    assert archive["format"] == "lyss.memories.v1"
    assert sorted(item["text"] for item in archive["memories"]) == ["Owns a red bicycle", "Prefers green tea"]
    assert (
        await client.get(f"/api/memories/exports/{job['id']}", headers=auth_headers(tenant_b.admin))
    ).status_code == 404

    # Imported into the admin's own memories: all new, embedded with the tenant's model. Then again (the two
    # jobs run at once; the per-user lock orders them): all known.
    archive["memories"].append({"text": "Lives in Lyon", "memory_type": "fact", "importance": 70})
    imported = await client.post("/api/memories/imports", json=archive, headers=admin)
    assert imported.status_code == 202, imported.text
    again = await client.post("/api/memories/imports", json=archive, headers=admin)
    async with running_worker(settings):
        first = await wait_for_status(client, admin, imported.json()["id"], {"succeeded", "failed", "dead"})
        second = await wait_for_status(client, admin, again.json()["id"], {"succeeded", "failed", "dead"})
    results = sorted((job["result"]["imported"], job["result"]["duplicates"]) for job in (first, second))
    assert results == [(0, 3), (3, 0)]  # whichever ran first imported all three; the other found them all
    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = (
            await session.execute(
                select(Memory.memory_text, Memory.embedding_dim, Memory.source_type, Memory.importance_score).where(
                    Memory.user_id == tenant_a.admin.id, Memory.source_type == "import"
                )
            )
        ).all()
    assert sorted(rows) == [
        ("Lives in Lyon", 256, "import", 70),
        ("Owns a red bicycle", 256, "import", 50),
        ("Prefers green tea", 256, "import", 50),
    ]

    # A malformed archive is refused at the door; a user cannot import into someone else.
    bad = await client.post("/api/memories/imports", json={"format": "other", "memories": []}, headers=user)
    assert bad.status_code == 400
    foreign = await client.post(
        "/api/memories/imports", params={"user_id": str(tenant_a.admin.id)}, json=archive, headers=user
    )
    assert foreign.status_code == 403


async def test_an_export_of_someone_the_caller_may_not_export_is_refused_at_submission_like_an_import(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    archive = {"format": "lyss.memories.v1", "memories": []}
    cases = [(admin, tenant_b.user.id, 404), (admin, uuid4(), 404), (user, tenant_a.admin.id, 403)]
    for headers, stranger, status in cases:
        export = {"kind": "memory.export", "payload": {"user_id": str(stranger)}}
        refused = await client.post("/api/jobs", json=export, headers=headers)
        imported = await client.post(
            "/api/memories/imports", params={"user_id": str(stranger)}, json=archive, headers=headers
        )
        assert (refused.status_code, imported.status_code) == (status, status), refused.text
        assert refused.json()["detail"] == imported.json()["detail"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        kinds = list(await session.scalars(select(Job.kind)))
    assert kinds == ["fixture.finished"]  # nothing was queued to fail later
    accepted = await client.post(
        "/api/jobs", json={"kind": "memory.export", "payload": {"user_id": str(tenant_a.user.id)}}, headers=admin
    )
    assert accepted.status_code == 201, accepted.text
