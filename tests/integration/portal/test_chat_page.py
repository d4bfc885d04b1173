"""The chat page over HTTP: who sees it, its conversation forms, the API calls it makes, what answers render as."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import escape

from tests.integration.chat.test_chat import sse_events
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

CONVERSATION_LINK = re.compile(r"/portal/chat/([0-9a-f-]{36})")


async def _conversations(client: Client, status: str = "active") -> list[dict[str, Any]]:
    response = await client.get(f"/api/conversations?status={status}")
    assert response.status_code == 200, response.text
    return list(response.json())


async def _start(client: Client, csrf: str, **fields: str) -> str:
    response = await client.post("/portal/chat", data={"csrf_token": csrf, "model": "gpt-test", **fields})
    assert response.status_code == 303, response.text
    found = CONVERSATION_LINK.fullmatch(response.headers["location"])
    assert found
    return found[1]


async def test_an_end_user_has_the_chat_page_in_the_menu_and_starts_a_conversation_there(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "page-up", models=["gpt-test", "gpt-other"])
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    chat = await client.get("/portal/chat")
    assert chat.status_code == 200
    assert '<a href="/portal/chat" aria-current="page">Chat</a>' in chat.text
    # The models the user's chat key can reach are the choices; the fixture's conversation is listed.
    assert re.findall(r'<option value="([^"]*)"', chat.text) == ["gpt-other", "gpt-test"]
    assert "Fixture" in chat.text
    assert '<script src="/portal/static/chat.js" defer></script>' in chat.text
    assert " style=" not in chat.text
    assert "<script>" not in chat.text

    conversation_id = await _start(client, csrf, title="Trip to Lisbon")
    shown = await client.get(f"/portal/chat/{conversation_id}")
    assert shown.status_code == 200
    assert f'data-csrf="{csrf}"' in shown.text
    assert f'data-conversation="{conversation_id}"' in shown.text
    assert "<h1>Trip to Lisbon</h1>" in shown.text
    assert 'id="message"' in shown.text  # the message box
    assert (await client.get("/portal/static/chat.js")).status_code == 200

    # Searching titles narrows the list; the words are text, not patterns.
    found = await client.get("/portal/chat?q=lisbon")
    assert "Trip to Lisbon" in found.text
    assert "Fixture" not in found.text
    assert "No conversation matches." in (await client.get("/portal/chat?q=%25")).text


async def test_conversation_forms_refuse_bad_input_next_to_the_field_and_save_good_input(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "page-up", models=["gpt-test"])
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    before = len(await _conversations(client))

    not_allowed = await client.post("/portal/chat", data={"csrf_token": csrf, "model": "gpt-secret"})
    assert not_allowed.status_code == 400
    assert field_error(not_allowed.text, "model") == "Choose one of the models you may use."
    too_long = await client.post("/portal/chat", data={"csrf_token": csrf, "model": "gpt-test", "title": "x" * 201})
    assert too_long.status_code == 400
    assert field_error(too_long.text, "title") == "At most 200 characters."
    assert len(await _conversations(client)) == before  # nothing saved

    conversation_id = await _start(client, csrf)
    path = f"/portal/chat/{conversation_id}"
    good = {
        "csrf_token": csrf,
        "title": "Renamed",
        "model": "gpt-test",
        "system_prompt": "Be brief.",
        "temperature": "0.2",
    }
    for wrong, field, message in [
        ({"title": ""}, "title", "This field is required."),
        ({"temperature": "hot"}, "temperature", "Enter a number."),
        ({"temperature": "3"}, "temperature", "At most 2.0."),
        ({"system_prompt": "p" * 20001}, "system_prompt", "At most 20000 characters."),
        ({"model": "gpt-secret"}, "model", "Choose one of the models you may use."),
    ]:
        refused = await client.post(path, data={**good, **wrong})
        assert refused.status_code == 400, wrong
        assert field_error(refused.text, field) == message
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["conversation"]
    assert (stored["title"], stored["system_prompt"], stored["temperature"]) == ("New conversation", None, 0.7)

    assert (await client.post(path, data=good)).status_code == 303
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["conversation"]
    assert (stored["title"], stored["system_prompt"], stored["temperature"]) == ("Renamed", "Be brief.", 0.2)
    # An emptied prompt is cleared, not kept.
    assert (await client.post(path, data={**good, "system_prompt": ""})).status_code == 303
    assert not (await client.get(f"/api/conversations/{conversation_id}")).json()["conversation"]["system_prompt"]

    assert (await client.post(f"{path}/archive", data={"csrf_token": csrf})).status_code == 303
    assert [c["id"] for c in await _conversations(client, "archived")] == [conversation_id]
    assert "This conversation is archived" in (await client.get(path)).text
    assert (await client.post(f"{path}/unarchive", data={"csrf_token": csrf})).status_code == 303
    assert (await client.post(f"{path}/delete", data={"csrf_token": csrf})).headers["location"] == "/portal/chat"
    assert (await client.get(path)).status_code == 404


async def test_another_users_conversation_is_not_found_on_the_page(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    for foreign in (tenant_a.conversation.id, tenant_b.conversation.id):  # a colleague's, another tenant's
        assert (await client.get(f"/portal/chat/{foreign}")).status_code == 404
        for action in ("", "/archive", "/delete"):
            response = await client.post(
                f"/portal/chat/{foreign}{action}", data={"csrf_token": csrf, "title": "taken", "model": "x"}
            )
            assert response.status_code == 404
    assert (await client.get(f"/api/conversations/{tenant_a.conversation.id}")).status_code == 404


async def test_the_pages_api_calls_need_the_csrf_header_and_answers_render_as_text(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "page-up", models=["gpt-test"])
    hostile = '<script>alert("x")</script> **bold** <img src=x onerror=alert(1)>'
    upstream.behave("page-up", replies=[hostile])
    # The admin's fixture memories ("Likes tea") are found for a message about tea and sent with it.
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    conversation_id = await _start(client, csrf)
    url = f"/api/conversations/{conversation_id}/messages"
    body = {"content": "Which tea do I like?", "stream": True}

    assert (await client.post(url, json=body)).status_code == 403
    assert (await client.post(url, json=body, headers={"X-CSRF-Token": "wrong"})).status_code == 403
    assert upstream.calls["page-up"] == 0
    answered = await client.post(url, json=body, headers={"X-CSRF-Token": csrf})
    assert answered.status_code == 200, answered.text
    events = sse_events(answered.text)
    assert "".join(data["content"] for name, data in events if name == "delta") == hostile
    assert events[-1][0] == "done"
    details = events[-1][1]["assistant_message"]["details"]
    used = details["memories"]
    assert str(tenant_a.memory.id) in used
    # Each memory's search score is kept with the answer, in the same order, best first.
    assert len(details["memory_scores"]) == len(used)
    assert details["memory_scores"] == sorted(details["memory_scores"], reverse=True)
    assert details["memory_scores"][used.index(str(tenant_a.memory.id))] > 0

    shown = (await client.get(f"/portal/chat/{conversation_id}")).text
    # The answer is text in the page (the script renders it from text nodes): no markup of the model's.
    assert f'<div class="md" data-markdown>{escape(hostile)}</div>' in shown
    assert "<script>alert" not in shown
    assert "<img src=x" not in shown
    # The memories the answer used, each linked to its page.
    assert f"Memories used ({len(used)})" in shown
    assert f'<a href="/portal/memories/{tenant_a.memory.id}">Likes tea</a>' in shown


async def test_without_an_organization_default_the_new_conversation_form_starts_with_a_model_that_works(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    # A fresh organization (the demo's first start) has no default chat model: an "Organization default"
    # preselected there would refuse the Start button's first click.
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "page-up", models=["gpt-test"])
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    chat = await client.get("/portal/chat")
    assert re.findall(r'<option value="([^"]*)"', chat.text) == ["gpt-test"]
    assert '<option value="gpt-test" selected>' in chat.text
    started = await client.post("/portal/chat", data={"csrf_token": csrf, "title": "", "model": "gpt-test"})
    assert started.status_code == 303, started.text
