"""Stored Responses API answers: kept per API key under RLS, read back and deleted with the official `openai` SDK,
chained through `previous_response_id`, expired at the tenant's retention and pruned."""

from __future__ import annotations

import datetime
import secrets
from typing import Any

import openai
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway import stored_responses
from app.gateway.caches import TokenInfo
from app.gateway.errors import GatewayError
from app.gateway.tasks import prune_responses
from app.jobs.registry import SCHEDULED_TASKS, WorkerServices
from db.provider import StoredResponse
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import issue_key, sdk_http
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def answer(text: str, model: str = "gpt-test") -> dict[str, Any]:
    """A Response object as `POST /v1/responses` would have sent it."""
    return {
        "id": stored_responses.new_response_id(),
        "object": "response",
        "created_at": 1_790_000_000,
        "model": model,
        "status": "completed",
        "output": [
            {
                "id": stored_responses.new_item_id("message"),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


async def key_and_token(
    client: Client, headers: dict[str, str], worker_services: WorkerServices
) -> tuple[str, TokenInfo]:
    key, _ = await issue_key(client, headers, name=f"key {secrets.token_hex(4)}")
    return key, await worker_services.gateway.authenticate(key, None)


def sdk(client: Client, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0
    )


async def test_the_sdk_retrieves_pages_through_and_deletes_a_stored_response(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
) -> None:
    key, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    stored = answer("Paris.")
    items = await stored_responses.store(
        session_maker,
        token,
        stored,
        [
            {"role": "system", "content": "Answer briefly."},
            *({"role": "user", "content": f"question {n}"} for n in range(3)),
            {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
        ],
        None,
    )
    ids = [item["id"] for item in items]
    assert [identifier.split("_")[0] for identifier in ids] == ["msg", "msg", "msg", "msg", "fco"]
    gpt = sdk(client, key)

    retrieved = await gpt.responses.retrieve(stored["id"])
    assert (retrieved.id, retrieved.model, retrieved.output_text) == (stored["id"], "gpt-test", "Paris.")

    # The default order is newest first; a page of two, then the next from its last id, as the SDK pages.
    first = await gpt.responses.input_items.list(stored["id"], limit=2)
    assert [item.id for item in first.data] == ids[::-1][:2]
    assert first.has_more is True
    every = [item.id async for item in gpt.responses.input_items.list(stored["id"], limit=2)]
    assert every == ids[::-1]
    ascending = await gpt.responses.input_items.list(stored["id"], order="asc", after=ids[1], limit=2)
    assert [item.id for item in ascending.data] == ids[2:4]
    assert ascending.has_more is True
    last = await gpt.responses.input_items.list(stored["id"], order="asc", after=ids[3])
    assert ([item.id for item in last.data], last.has_more) == ([ids[4]], False)
    user_message = ascending.data[0]
    assert user_message.type == "message"
    assert user_message.content[0].type == "input_text"
    assert user_message.content[0].text == "question 1"

    deleted = await gpt.responses.with_raw_response.delete(stored["id"])
    assert deleted.http_response.json() == {"id": stored["id"], "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as gone:
        await gpt.responses.retrieve(stored["id"])
    assert gone.value.body == {
        "message": f"Response with id '{stored['id']}' not found.",
        "type": "invalid_request_error",
        "param": "response_id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        await gpt.responses.delete(stored["id"])
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(StoredResponse.id)) is None


async def test_a_response_is_seen_only_by_the_key_that_created_it(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
) -> None:
    key, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    stored = answer("mine")
    await stored_responses.store(session_maker, token, stored, "hello", None)
    same_user, same_user_token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    admin, _ = await key_and_token(client, auth_headers(tenant_a.admin), worker_services)
    elsewhere, elsewhere_token = await key_and_token(client, auth_headers(tenant_b.admin), worker_services)
    for other in (same_user, admin, elsewhere):
        for method, path in (
            ("GET", f"/v1/responses/{stored['id']}"),
            ("GET", f"/v1/responses/{stored['id']}/input_items"),
            ("DELETE", f"/v1/responses/{stored['id']}"),
        ):
            refused = await client.request(method, path, headers=bearer(other))
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["error"]["param"] == "response_id"
    for other_token in (same_user_token, elsewhere_token):
        with pytest.raises(GatewayError) as refused_history:
            await stored_responses.history(session_maker, other_token, stored["id"])
        assert refused_history.value.code == "previous_response_not_found"
    # Still there for its own key after all those attempts.
    assert (await sdk(client, key).responses.retrieve(stored["id"])).output_text == "mine"


async def test_history_follows_previous_response_id_oldest_first_and_refuses_a_broken_chain(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    turns = [answer(f"answer {n}") for n in range(3)]
    previous = None
    inputs = []
    for n, turn in enumerate(turns):
        inputs.append(await stored_responses.store(session_maker, token, turn, f"question {n}", previous))
        previous = turn["id"]

    conversation = await stored_responses.history(session_maker, token, turns[2]["id"])
    expected = [item for n, turn in enumerate(turns) for item in (*inputs[n], *turn["output"])]
    assert conversation == expected
    assert [item["content"][0]["text"] for item in conversation] == [
        "question 0",
        "answer 0",
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    assert await stored_responses.history(session_maker, token, turns[0]["id"]) == expected[:2]

    monkeypatch.setattr(stored_responses, "MAX_HISTORY", 2)
    with pytest.raises(GatewayError) as too_long:
        await stored_responses.history(session_maker, token, turns[2]["id"])
    assert (too_long.value.status_code, too_long.value.param) == (400, "previous_response_id")
    monkeypatch.undo()

    await sdk(client, key).responses.delete(turns[0]["id"])
    for missing, asked in ((turns[0]["id"], turns[2]["id"]), ("resp_unknown", "resp_unknown"), ("x\x00", "x\x00")):
        with pytest.raises(GatewayError) as broken:
            await stored_responses.history(session_maker, token, asked)
        assert broken.value.status_code == 404
        assert broken.value.body()["error"] == {
            "message": f"Previous response with id '{missing}' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }


async def test_an_expired_response_is_not_returned_and_the_prune_job_deletes_it(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
) -> None:
    key, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    expired, kept = answer("old"), answer("new")
    await stored_responses.store(session_maker, token, expired, "old question", None)
    await stored_responses.store(session_maker, token, kept, "new question", expired["id"])
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(StoredResponse)
            .where(StoredResponse.response_id == expired["id"])
            .values(expires_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1))
        )
        await session.commit()

    gpt = sdk(client, key)
    with pytest.raises(openai.NotFoundError):
        await gpt.responses.retrieve(expired["id"])
    with pytest.raises(GatewayError) as broken:
        await stored_responses.history(session_maker, token, kept["id"])
    assert expired["id"] in broken.value.message

    assert SCHEDULED_TASKS["gateway.prune_responses"].cron_for(worker_services.settings)
    assert await prune_responses(worker_services) == {"pruned": 1}
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(StoredResponse.response_id))) == [kept["id"]]
    assert (await gpt.responses.retrieve(kept["id"])).output_text == "new"


async def test_the_retention_setting_sets_expiry_and_refuses_bad_values(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
) -> None:
    admin = auth_headers(tenant_a.admin)
    assert (await client.get("/api/tenant/policy", headers=admin)).json()["response_retention_days"] == 30
    for value in (0, 366, -1, "7", 1.5, True, 10**30):
        refused = await client.patch("/api/tenant/policy", json={"response_retention_days": value}, headers=admin)
        assert refused.status_code == 400, (value, refused.text)
        assert refused.json()["extra"][0]["key"] == "response_retention_days"
    changed = await client.patch("/api/tenant/policy", json={"response_retention_days": 7}, headers=admin)
    assert changed.json()["response_retention_days"] == 7

    _, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    stored = answer("kept a week")
    await stored_responses.store(session_maker, token, stored, "hi", None)
    async with tenant_session(session_maker, tenant_a.id) as session:
        expires_at = await session.scalar(select(StoredResponse.expires_at))
    assert expires_at is not None
    left = expires_at - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=6, hours=23) < left <= datetime.timedelta(days=7)

    # The portal form: bad values re-render with the message next to the field, and nothing is saved.
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    page = (await client.get("/portal/settings")).text
    assert 'name="response_retention_days" type="number" value="7"' in page
    for value, message in (("", "This field is required."), ("abc", "Enter a whole number."), ("400", "At most 365.")):
        form = await client.post("/portal/settings/policy", data={"csrf_token": csrf, "response_retention_days": value})
        assert form.status_code == 400, value
        assert field_error(form.text, "response_retention_days") == message
    assert (await client.get("/api/tenant/policy", headers=admin)).json()["response_retention_days"] == 7
    saved = await client.post("/portal/settings/policy", data={"csrf_token": csrf, "response_retention_days": "90"})
    assert saved.status_code == 303
    assert (await client.get("/api/tenant/policy", headers=admin)).json()["response_retention_days"] == 90


async def test_the_routes_refuse_bad_query_parameters_and_unknown_paths_naming_them(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    worker_services: WorkerServices,
) -> None:
    key, token = await key_and_token(client, auth_headers(tenant_a.user), worker_services)
    stored = answer("listed")
    await stored_responses.store(session_maker, token, stored, "hi", None)
    items = f"/v1/responses/{stored['id']}/input_items"
    for query, param in (
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("order=sideways", "order"),
        ("after=msg_unknown", "after"),
        ("before=msg_%00", "before"),
    ):
        refused = await client.get(f"{items}?{query}", headers=bearer(key))
        assert refused.status_code == 400, (query, refused.text)
        assert refused.json()["error"]["param"] == param
    streamed = await client.get(f"/v1/responses/{stored['id']}?stream=true", headers=bearer(key))
    assert (streamed.status_code, streamed.json()["error"]["param"]) == (400, "stream")
    for path in ("/v1/responses/resp_%00", "/v1/responses/not-an-id/input_items", "/v1/responses/" + "r" * 5000):
        missing = await client.get(path, headers=bearer(key))
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json()["error"]["param"] == "response_id"
    wrong_method = await client.post(f"/v1/responses/{stored['id']}", json={}, headers=bearer(key))
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "GET, DELETE")
    listed = await client.get(f"{items}?limit=1&order=asc&include[]=message.input_image.image_url", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    assert listed.json()["first_id"] == listed.json()["last_id"] == listed.json()["data"][0]["id"]
