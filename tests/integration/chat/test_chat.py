"""Chat end to end over HTTP: the gateway's router and quota, the mock upstream, stored turns, summaries."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.client import CHAT_TOKEN_NAME
from app.settings import Settings
from db.chat import Summary
from db.provider import ApiToken
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, set_price, usage_rows
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def start_conversation(client: Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/conversations", json={"model": "gpt-test", "use_memory": False, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", "message"), msgspec.json.decode(lines["data"])))
    return events


async def test_a_turn_is_answered_stored_and_charged_to_the_users_chat_key(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    await set_price(client, admin, "gpt-test", 1_000_000, 2_000_000)  # 1 and 2 credits per token
    upstream.behave("chat-up", replies=["Paris is the capital of France."])
    conversation = await start_conversation(client, user, system_prompt="Answer briefly.", temperature=0.2)

    response = await client.post(
        f"/api/conversations/{conversation['id']}/messages", json={"content": "Capital of France?"}, headers=user
    )
    assert response.status_code == 200, response.text
    turn = response.json()
    assert turn["assistant_message"]["content"] == "Paris is the capital of France."
    assert turn["assistant_message"]["completion_tokens"] == 6
    sent = upstream.bodies[-1][1]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 1024)

    detail = (await client.get(f"/api/conversations/{conversation['id']}", headers=user)).json()
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris is the capital of France."),
    ]
    assert detail["conversation"]["message_count"] == 2
    usage = turn["assistant_message"]["prompt_tokens"] + turn["assistant_message"]["completion_tokens"]
    assert detail["conversation"]["token_usage"] == usage

    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.user_id, row.model, row.completion_tokens) for row in rows] == [(tenant_a.user.id, "gpt-test", 6)]
    async with tenant_session(session_maker, tenant_a.id) as session:
        chat_key = await session.scalar(
            select(ApiToken).where(ApiToken.user_id == tenant_a.user.id, ApiToken.name == CHAT_TOKEN_NAME)
        )
        assert chat_key is not None
        assert rows[0].token_id == chat_key.id
        assert chat_key.used_quota == rows[0].cost == rows[0].prompt_tokens + 6 * 2


async def test_a_streamed_turn_arrives_in_pieces_and_is_stored_whole(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    upstream.behave("chat-up", replies=["One, two, three."])
    conversation = await start_conversation(client, user)
    response = await client.post(
        f"/api/conversations/{conversation['id']}/messages", json={"content": "Count", "stream": True}, headers=user
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert deltas == ["One, ", "two, ", "three."]
    name, done = events[-1]
    assert name == "done"
    assert (done["assistant_message"]["content"], done["assistant_message"]["status"]) == (
        "One, two, three.",
        "complete",
    )
    assert done["assistant_message"]["completion_tokens"] == 3
    detail = (await client.get(f"/api/conversations/{conversation['id']}", headers=user)).json()
    assert [m["content"] for m in detail["messages"]] == ["Count", "One, two, three."]


async def test_no_database_connection_waits_in_a_transaction_on_the_provider(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    """A model can take seconds to its first token: meanwhile the turn holds no connection, idle in transaction."""
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    upstream.behave("chat-up", hang_seconds=1.0)
    conversation = await start_conversation(client, user)
    for stream in (True, False):
        calls = upstream.calls["chat-up"]
        turn = asyncio.create_task(
            client.post(
                f"/api/conversations/{conversation['id']}/messages",
                json={"content": "Think", "stream": stream},
                headers=user,
            )
        )
        # The provider counts the call in another thread, then holds its answer for a second.
        for _ in range(500):
            if upstream.calls["chat-up"] > calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        async with session_maker() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND state = 'idle in transaction' AND state_change < clock_timestamp() - interval '0.2 seconds'"
                )
            )
        response = await turn
        assert response.status_code == 200, response.text
        assert waiting == 0


async def test_a_stream_cut_by_the_provider_keeps_what_arrived(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    upstream.behave("chat-up", replies=["alpha beta gamma delta"], cut_after_chunks=2)
    conversation = await start_conversation(client, user)
    response = await client.post(
        f"/api/conversations/{conversation['id']}/messages", json={"content": "Go", "stream": True}, headers=user
    )
    events = sse_events(response.text)
    deltas = [data["content"] for name, data in events if name == "delta"]
    # The provider vanished after its second chunk (the last may be lost in flight): a part arrived.
    assert deltas in (["alpha "], ["alpha ", "beta "])
    assert events[-1][0] == "error"
    detail = (await client.get(f"/api/conversations/{conversation['id']}", headers=user)).json()
    answer = detail["messages"][-1]
    assert (answer["content"], answer["status"]) == ("".join(deltas), "incomplete")


async def test_conversations_are_private_and_bad_input_is_refused(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    conversation = await start_conversation(client, user)
    path = f"/api/conversations/{conversation['id']}"
    # Another user of the tenant (even its admin) and another tenant: not found, on every route.
    for outsider in (admin, auth_headers(tenant_b.admin)):
        assert (await client.get(path, headers=outsider)).status_code == 404
        assert (await client.patch(path, json={"title": "x"}, headers=outsider)).status_code == 404
        assert (await client.delete(path, headers=outsider)).status_code == 404
        sent = await client.post(f"{path}/messages", json={"content": "hi"}, headers=outsider)
        assert sent.status_code == 404
    assert (await client.get("/api/conversations", headers=admin)).json() == []

    unknown = await client.post(f"/api/conversations/{UUID(int=7)}/messages", json={"content": "hi"}, headers=user)
    assert unknown.status_code == 404
    empty = await client.post(f"{path}/messages", json={"content": ""}, headers=user)
    assert empty.status_code == 400
    blank = await client.post(f"{path}/messages", json={"content": "   "}, headers=user)
    assert (blank.status_code, blank.json()["detail"]) == (400, "The message is empty.")
    assert upstream.calls["chat-up"] == 0  # nothing reached the provider
    bad_temperature = await client.post("/api/conversations", json={"model": "m", "temperature": 3}, headers=user)
    assert bad_temperature.status_code == 400

    # A model the user may not use: the gateway's answer, and the user's message is kept.
    forbidden = await start_conversation(client, user, model="not-offered")
    refused = await client.post(f"/api/conversations/{forbidden['id']}/messages", json={"content": "hi"}, headers=user)
    assert refused.status_code == 404
    assert "not-offered" in refused.json()["detail"]
    kept = (await client.get(f"/api/conversations/{forbidden['id']}", headers=user)).json()["messages"]
    assert [m["content"] for m in kept] == ["hi"]

    archived = await client.patch(path, json={"status": "archived"}, headers=user)
    assert archived.json()["status"] == "archived"
    after = await client.post(f"{path}/messages", json={"content": "hi"}, headers=user)
    assert after.status_code == 400
    assert (await client.delete(path, headers=user)).status_code == 204
    assert (await client.get(path, headers=user)).status_code == 404


async def test_a_long_conversation_is_summarised_and_the_summary_replaces_old_turns(
    client: Client,
    upstream: MockUpstream,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "chat-up")
    conversation = await start_conversation(client, user)
    path = f"/api/conversations/{conversation['id']}/messages"
    # 6 turns = 12 messages: 6 beyond the 6 kept verbatim, the test setting's threshold.
    upstream.behave("chat-up", replies=[f"answer {n}" for n in range(6)] + ["SUMMARY: the user counted to five."])
    for n in range(6):
        assert (await client.post(path, json={"content": f"question {n}"}, headers=user)).status_code == 200
    jobs = (await client.get("/api/jobs", params={"kind": "chat.summarize"}, headers=user)).json()
    assert len(jobs) == 1
    async with running_worker(settings):
        done = await wait_for_status(client, user, jobs[0]["id"], {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded", done
    assert done["result"]["summarised_messages"] == 6
    async with tenant_session(session_maker, tenant_a.id) as session:
        summary = await session.scalar(select(Summary))
        assert summary is not None
        assert summary.summary_text == "SUMMARY: the user counted to five."

    upstream.behave("chat-up", replies=["answer 6"])
    assert (await client.post(path, json={"content": "question 6"}, headers=user)).status_code == 200
    sent = upstream.bodies[-1][1]["messages"]
    assert sent[0] == {
        "role": "system",
        "content": "Summary of the earlier conversation:\nSUMMARY: the user counted to five.",
    }
    # Only the turns after the summary follow it: questions 3 to 6 and their answers.
    assert [m["content"] for m in sent[1:]] == [
        "question 3", "answer 3", "question 4", "answer 4", "question 5", "answer 5", "question 6",
    ]  # fmt: skip


async def test_an_attached_file_goes_to_the_model_with_its_message_and_stays_private(
    client: Client,
    upstream: MockUpstream,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "attach-up")
    conversation = await start_conversation(client, user)
    base = f"/api/conversations/{conversation['id']}/attachments"
    uploaded = await client.post(
        base, files={"file": ("notes.txt", b"The launch code word is PELICAN.", "text/plain")}, headers=user
    )
    assert uploaded.status_code == 201, uploaded.text
    attachment = uploaded.json()
    assert (attachment["filename"], attachment["size_bytes"]) == ("notes.txt", 32)
    assert [item["id"] for item in (await client.get(base, headers=user)).json()] == [attachment["id"]]

    # The file's text reaches the provider with this message; the stored message is what the user typed.
    turn = await client.post(
        f"/api/conversations/{conversation['id']}/messages",
        json={"content": "What is the code word?", "attachment_ids": [attachment["id"]]},
        headers=user,
    )
    assert turn.status_code == 200, turn.text
    sent = upstream.bodies[-1][1]["messages"][-1]["content"]
    assert sent.startswith("What is the code word?")
    assert "--- Attached file: notes.txt ---\nThe launch code word is PELICAN." in sent
    assert turn.json()["user_message"]["content"] == "What is the code word?"

    # Downloaded through a short-lived link; bytes unchanged.
    link = await client.get(f"{base}/{attachment['id']}", headers=user)
    assert link.status_code == 303
    assert (await client.get(link.headers["location"])).content == b"The launch code word is PELICAN."

    # Bad files are refused and nothing is kept.
    for name, content, kind in (
        ("photo.png", b"\x89PNG...", "image/png"),
        ("empty.txt", b"", "text/plain"),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), "text/plain"),
        ("big.txt", b"x" * (512 * 1024 + 1), "text/plain"),
    ):
        refused = await client.post(base, files={"file": (name, content, kind)}, headers=user)
        assert refused.status_code == 400, (name, refused.text)
    assert len((await client.get(base, headers=user)).json()) == 1

    # Another user, or another tenant, sees nothing of it; an attachment of another conversation is refused.
    for outsider in (admin, auth_headers(tenant_b.admin)):
        assert (await client.get(base, headers=outsider)).status_code == 404
        assert (await client.get(f"{base}/{attachment['id']}", headers=outsider)).status_code == 404
    other = await start_conversation(client, user)
    borrowed = await client.post(
        f"/api/conversations/{other['id']}/messages",
        json={"content": "and here?", "attachment_ids": [attachment["id"]]},
        headers=user,
    )
    assert borrowed.status_code == 404

    # Deleting the conversation removes the file from the object store too.
    stored = (
        settings.storage_path / "tenants" / str(tenant_a.id) / "attachments" / conversation["id"] / attachment["id"]
    )
    assert stored.is_file()
    assert (await client.delete(f"/api/conversations/{conversation['id']}", headers=user)).status_code == 204
    assert not stored.exists()
