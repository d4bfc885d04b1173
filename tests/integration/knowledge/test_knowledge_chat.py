"""Chat with knowledge over HTTP, the mock provider as the chat and embeddings channel: the sections put into the
context, numbered; the citations the answer records; which bases a conversation may attach; a failed retrieval."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID, uuid4

import openai
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.client import CHAT_TOKEN_NAME
from app.knowledge.chunking import count_tokens
from app.knowledge.context import INSTRUCTIONS, sources
from app.knowledge.schemas import ParentSection, SearchHit
from db.provider import ApiToken
from db.session import tenant_session
from tests.integration.knowledge.test_knowledge_bases import BASES, EMBEDDER, create_base
from tests.integration.knowledge.test_search import HOLIDAYS, OPENS, PARKING, SICK, add_document, embedder
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key, sdk_http, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

CONVERSATIONS = "/api/conversations"


async def chat_with_handbook(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant: TenantRows,
    auth_headers: AuthHeaders,
) -> tuple[str, UUID, list[UUID]]:
    """A chat channel, an embeddings channel, and the user's base holding office.md (one section, two passages)
    and holidays.txt: (base id, office document id, office passage ids)."""
    key = await embedder(client, tenant, upstream, auth_headers)
    await add_channel(client, auth_headers(tenant.admin), upstream, f"chat-{tenant.slug}")
    upstream.behave(f"chat-{tenant.slug}", replies=["It opens at nine [1]."] * 5)
    user = auth_headers(tenant.user)
    base = await create_base(client, user)
    office, passages = await add_document(client, session_maker, tenant, key, base["id"], "office.md", [OPENS, PARKING])
    await add_document(client, session_maker, tenant, key, base["id"], "holidays.txt", [HOLIDAYS, SICK])
    return base["id"], office, passages


async def start(client: Client, headers: dict[str, str], **fields: Any) -> Any:
    response = await client.post(
        CONVERSATIONS, json={"model": "gpt-test", "use_memory": False, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def ask(client: Client, headers: dict[str, str], conversation_id: str, content: str) -> Any:
    response = await client.post(
        f"{CONVERSATIONS}/{conversation_id}/messages", json={"content": content}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def chat_requests(upstream: MockUpstream) -> list[dict[str, Any]]:
    return [body for _, body in upstream.bodies if "messages" in body]


async def test_a_turn_gets_the_matching_section_numbered_and_the_answer_cites_it(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, office, passages = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    user = auth_headers(tenant_a.user)
    conversation = await start(client, user, system_prompt="Answer briefly.", knowledge_base_ids=[base_id, base_id])
    assert conversation["knowledge_base_ids"] == [base_id]

    turn = await ask(client, user, conversation["id"], "When does the office open at nine?")

    system = chat_requests(upstream)[-1]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Answer briefly.\n\n" + INSTRUCTIONS)
    # The passage's whole section (both passages of office.md), numbered, with its document, page and section.
    assert f"[1] office.md, page 1, Handbook\n{OPENS} {PARKING}" in system["content"]
    assert "[2] holidays.txt, page 1, Handbook" in system["content"]
    # One source per section: the second passage of office.md's section is not repeated.
    assert system["content"].count(PARKING) == 1
    citations = turn["assistant_message"]["details"]["citations"]
    assert citations[0] == {
        "number": 1,
        "base_id": base_id,
        "document_id": str(office),
        "filename": "office.md",
        "page": 1,
        "section": "Handbook",
        "chunk_id": str(passages[0]),
    }
    assert [citation["number"] for citation in citations] == [1, 2]
    assert "knowledge_error" not in turn["assistant_message"]["details"]
    detail = (await client.get(f"{CONVERSATIONS}/{conversation['id']}", headers=user)).json()
    assert detail["messages"][-1]["details"]["citations"] == citations
    # The question's embedding is billed to the user, as a knowledge search is.
    rows = await usage_rows(session_maker, tenant_a, 4)
    assert ("embeddings", tenant_a.user.id) in [(row.endpoint, row.user_id) for row in rows]


async def test_only_readable_bases_attach_and_a_base_deleted_later_is_skipped(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, _, _ = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    user, admin = auth_headers(tenant_a.user), auth_headers(tenant_a.admin)
    admins_own = (await create_base(client, admin, name="Admin notes"))["id"]
    await embedder(client, tenant_b, upstream, auth_headers)
    other_tenants = (await create_base(client, auth_headers(tenant_b.user)))["id"]

    for unreadable in (admins_own, other_tenants, str(uuid4())):
        response = await client.post(
            CONVERSATIONS, json={"model": "gpt-test", "knowledge_base_ids": [base_id, unreadable]}, headers=user
        )
        assert response.status_code == 404, response.text
        assert "knowledge_base_ids" in response.json()["detail"]
        assert unreadable in response.json()["detail"]
    for wrong in ("nope", ["nope"], [1], [str(uuid4())] * 21):
        response = await client.post(
            CONVERSATIONS, json={"model": "gpt-test", "knowledge_base_ids": wrong}, headers=user
        )
        assert response.status_code == 400, response.text
        assert "knowledge_base_ids" in response.text

    conversation = await start(client, user)
    assert conversation["knowledge_base_ids"] == []
    path = f"{CONVERSATIONS}/{conversation['id']}"
    response = await client.patch(path, json={"knowledge_base_ids": [admins_own]}, headers=user)
    assert response.status_code == 404, response.text
    assert (await client.get(path, headers=user)).json()["conversation"]["knowledge_base_ids"] == []
    response = await client.patch(path, json={"knowledge_base_ids": [base_id]}, headers=user)
    assert (response.status_code, response.json()["knowledge_base_ids"]) == (200, [base_id])
    # Another change leaves the bases as they are.
    response = await client.patch(path, json={"title": "Office"}, headers=user)
    assert response.json()["knowledge_base_ids"] == [base_id]

    assert (await client.delete(f"{BASES}/{base_id}", headers=user)).status_code == 204
    turn = await ask(client, user, conversation["id"], "When does the office open?")
    assert turn["assistant_message"]["content"] == "It opens at nine [1]."
    assert "citations" not in turn["assistant_message"]["details"]
    assert "knowledge_error" not in turn["assistant_message"]["details"]
    assert chat_requests(upstream)[-1]["messages"] == [{"role": "user", "content": "When does the office open?"}]
    response = await client.patch(path, json={"knowledge_base_ids": []}, headers=user)
    assert response.json()["knowledge_base_ids"] == []


async def test_a_refused_retrieval_answers_without_knowledge_and_says_why(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, _, _ = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    user = auth_headers(tenant_a.user)
    conversation = await start(client, user, knowledge_base_ids=[base_id])
    # The user's chat key may no longer use the embedding model: the query cannot be embedded.
    await ask(client, user, conversation["id"], "warm up the chat key")
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == tenant_a.user.id, ApiToken.name == CHAT_TOKEN_NAME)
            .values(allowed_models=["gpt-test"])
        )
        await session.commit()

    turn = await ask(client, user, conversation["id"], "When does the office open at nine?")

    assert turn["assistant_message"]["content"] == "It opens at nine [1]."
    details = turn["assistant_message"]["details"]
    assert EMBEDDER in details["knowledge_error"]
    assert "citations" not in details
    assert all(message["role"] != "system" for message in chat_requests(upstream)[-1]["messages"])
    # The chat page says so under the answer.
    await sign_in(client, tenant_a, tenant_a.user.email)
    shown = await client.get(f"/portal/chat/{conversation['id']}")
    assert '<p class="notice warn">Answered without the knowledge bases: ' in shown.text
    assert EMBEDDER in shown.text


def hit(number: int, parent: str | None, text: str) -> SearchHit:
    return SearchHit(
        chunk_id=UUID(int=number),
        document_id=UUID(int=100 + number),
        filename=f"doc{number}.txt",
        base_id=UUID(int=1000),
        page=None,
        section=None,
        text=text,
        start_offset=0,
        end_offset=len(text),
        score=1.0 / number,
        parent=ParentSection(chunk_id=UUID(int=200 + number), text=parent) if parent is not None else None,
    )


def test_the_budget_goes_to_the_best_passages_first_their_sections_when_they_fit() -> None:
    small, large = "short section " * 5, "a long section " * 400
    hits = [hit(1, small, "first"), hit(2, large, "second passage"), hit(3, None, "third"), hit(4, large, "x" * 4000)]
    budget = count_tokens(INSTRUCTIONS) + 60
    knowledge = sources(hits, budget)
    # 1 fits whole; 2's section does not, its passage does; 3 has no section; 4 fits neither way and is left out.
    assert [citation.chunk_id for citation in knowledge.citations] == [UUID(int=1), UUID(int=2), UUID(int=3)]
    assert f"[1] doc1.txt\n{small}" in knowledge.text
    assert "[2] doc2.txt\nsecond passage" in knowledge.text
    assert large not in knowledge.text
    assert "[3] doc3.txt\nthird" in knowledge.text
    assert count_tokens(knowledge.text) <= budget
    assert sources(hits, count_tokens(INSTRUCTIONS)).text == ""


async def test_the_chat_page_attaches_bases_and_shows_the_citations_as_links(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, office, passages = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    admins_own = (await create_base(client, auth_headers(tenant_a.admin), name="Admin notes"))["id"]
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    conversation = await start(client, auth_headers(tenant_a.user))
    page_path = f"/portal/chat/{conversation['id']}"
    shown = await client.get(page_path)
    # The bases the user can read are the choices; the admin's own is not among them.
    choices = re.findall(r'name="knowledge_base_ids" value="([^"]*)"', shown.text)
    assert base_id in choices
    assert admins_own not in choices
    settings = {"csrf_token": csrf, "title": "Office", "model": "gpt-test", "temperature": "0.7"}

    for wrong, status in ((admins_own, 404), (str(uuid4()), 404), ("nope", 400)):
        response = await client.post(page_path, data={**settings, "knowledge_base_ids": [base_id, wrong]})
        assert response.status_code == status, response.text
        assert field_error(response.text, "knowledge_base_ids"), response.text
        assert (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()["conversation"][
            "knowledge_base_ids"
        ] == []
    response = await client.post(page_path, data={**settings, "knowledge_base_ids": [base_id]})
    assert response.status_code == 303, response.text
    assert (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()["conversation"]["knowledge_base_ids"] == [
        base_id
    ]
    assert f'value="{base_id}" checked' in (await client.get(page_path)).text

    await ask(client, {"X-CSRF-Token": csrf}, conversation["id"], "When does the office open at nine?")
    shown = await client.get(page_path)
    link = f'href="/portal/knowledge/{base_id}/documents/{office}#chunk-{passages[0]}">office.md, page 1 — Handbook</a>'
    assert link in shown.text
    assert 'class="citations"' in shown.text

    # Unchecking every base detaches them (the form sends no value at all).
    response = await client.post(page_path, data=settings)
    assert response.status_code == 303, response.text
    assert (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()["conversation"][
        "knowledge_base_ids"
    ] == []


def sdk(client: Client, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0
    )


async def test_v1_chat_completions_with_the_knowledge_field_gets_the_sources_and_returns_citations(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, office, passages = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    api = sdk(client, key)
    question: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "When does the office open?"},
    ]

    raw = await api.chat.completions.with_raw_response.create(
        model="gpt-test", messages=question, extra_body={"knowledge": {"base_ids": [base_id], "max_tokens": 2000}}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "It opens at nine [1]."
    assert raw.headers["x-lyss-citations"] == "2"
    citations = (completion.model_extra or {})["lyss_citations"]
    assert citations[0] == {
        "number": 1,
        "base_id": base_id,
        "document_id": str(office),
        "filename": "office.md",
        "page": 1,
        "section": "Handbook",
        "chunk_id": str(passages[0]),
    }
    sent = chat_requests(upstream)[-1]
    assert "knowledge" not in sent
    system = sent["messages"][0]
    # The sources join the client's own system message, after it.
    assert system["content"].startswith("Be brief.\n\n" + INSTRUCTIONS)
    assert f"[1] office.md, page 1, Handbook\n{OPENS} {PARKING}" in system["content"]
    assert sent["messages"][1:] == question[1:]

    # Streamed: the same sources; the citations in a last chunk without choices, before [DONE].
    stream = await api.chat.completions.create(
        model="gpt-test",
        messages=question[1:],
        stream=True,
        extra_body={"knowledge": {"base_ids": [base_id]}},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It opens at nine [1]."
    assert chunks[-1].choices == []
    assert (chunks[-1].model_extra or {})["lyss_citations"] == citations
    assert chunks[-1].id == chunks[0].id
    assert chat_requests(upstream)[-1]["messages"][0] == {"role": "system", "content": system["content"][11:]}


async def test_v1_knowledge_refuses_bases_out_of_reach_and_bad_fields_by_name(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    base_id, _, _ = await chat_with_handbook(client, upstream, session_maker, tenant_a, auth_headers)
    admins_own = (await create_base(client, auth_headers(tenant_a.admin), name="Admin notes"))["id"]
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    api = sdk(client, key)
    calls = upstream.calls[f"chat-{tenant_a.slug}"]
    question: list[Any] = [{"role": "user", "content": "When does the office open?"}]

    for unreachable in (admins_own, str(uuid4())):
        with pytest.raises(openai.NotFoundError) as missing:
            await api.chat.completions.create(
                model="gpt-test", messages=question, extra_body={"knowledge": {"base_ids": [base_id, unreachable]}}
            )
        error = missing.value.body
        assert isinstance(error, dict)
        assert error["param"] == "knowledge.base_ids"
        assert unreachable in error["message"]
    for knowledge, param in (
        ("all", "knowledge"),
        ({}, "knowledge"),
        ({"base_ids": []}, "knowledge.base_ids"),
        ({"base_ids": ["nope"]}, "knowledge.base_ids"),
        ({"base_ids": [base_id], "max_tokens": 5}, "knowledge.max_tokens"),
        ({"base_ids": [base_id], "max_tokens": "many"}, "knowledge.max_tokens"),
        ({"base_ids": [base_id], "other": 1}, "knowledge"),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            await api.chat.completions.create(model="gpt-test", messages=question, extra_body={"knowledge": knowledge})
        assert isinstance(bad.value.body, dict)
        assert bad.value.body["param"] == param, (knowledge, bad.value.body)
    with pytest.raises(openai.BadRequestError) as no_question:
        await api.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "system", "content": "hello"}],
            extra_body={"knowledge": {"base_ids": [base_id]}},
        )
    assert isinstance(no_question.value.body, dict)
    assert no_question.value.body["param"] == "messages"
    assert upstream.calls[f"chat-{tenant_a.slug}"] == calls


async def test_v1_knowledge_counts_in_the_reservation_and_a_plain_request_is_untouched(
    client: Client,
    upstream: MockUpstream,
    session_maker: async_sessionmaker[AsyncSession],
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await add_channel(client, admin, upstream, "answers")
    await set_price(client, admin, "gpt-test", 1_000_000, 1_000_000)  # a credit a token
    base = await create_base(client, user)
    lobby = "The lobby has plants and a long wooden bench by the window. " * 40
    await add_document(client, session_maker, tenant_a, key, base["id"], "office.md", [OPENS, lobby, lobby])
    # Room for a short question's worst case (a few hundred credits), not for it with a 5,000-byte section.
    api_key, _ = await issue_key(client, user, quota=3_000)
    api = sdk(client, api_key)
    body: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "When does the office open?"}],
        "max_tokens": 10,
    }

    plain = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert plain.status_code == 200, plain.text
    assert "lyss_citations" not in plain.json()
    assert "x-lyss-citations" not in plain.headers
    # Without the field nothing changes: the provider gets what the client sent.
    sent = chat_requests(upstream)[-1]
    assert {name: sent[name] for name in body} == body
    assert not any(message["role"] == "system" for message in sent["messages"])
    calls = upstream.calls["answers"]

    with pytest.raises(openai.RateLimitError) as refused:
        await api.chat.completions.create(**body, extra_body={"knowledge": {"base_ids": [base["id"]]}})
    assert refused.value.status_code == 429
    assert upstream.calls["answers"] == calls  # refused before the provider
    # A smaller budget leaves the section out (the passage alone fits) and the call goes through.
    small = await api.chat.completions.with_raw_response.create(
        **body, extra_body={"knowledge": {"base_ids": [base["id"]], "max_tokens": 100}}
    )
    assert small.headers["x-lyss-citations"] == "1"
    assert lobby not in chat_requests(upstream)[-1]["messages"][0]["content"]
    assert OPENS in chat_requests(upstream)[-1]["messages"][0]["content"]
