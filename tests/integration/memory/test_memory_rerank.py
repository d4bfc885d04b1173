"""Memory search reranked through the gateway's `/v1/rerank` on the mock provider (whose relevance is the
share of the query's words a document has): the new order, the cut to `limit`, who pays, a failing
reranker leaving the search's own order with a notice, and the settings on the API and the portal form."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.memory.controllers import header_safe
from db.session import tenant_session
from db.tenant import Organization
from tests.integration.portal.test_settings import option_values
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, usage_rows
from tests.support.memory import configure_memory
from tests.support.mock_upstream import MockUpstream, rerank_score
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

QUERY = "green tea in the morning"
# A long memory with every word of the query is far down a search by meaning (its vector is spread over
# many other words) and first for the mock's reranker, which counts the query's words only.
MEMORIES = [
    "Green tea",
    "Tea in the morning",
    "The morning train leaves at seven",
    "After the long walk along the river with the dog and a chat with the neighbours over the fence, every"
    " morning ends in the kitchen with a pot of green tea",
    "My favourite colour is green",
    "Tea with lemon in the afternoon",
]
BASE_SETTINGS = {"llm_model": "memory-llm", "embedding_model": "embed-test"}


async def with_memories(client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders) -> None:
    admin = auth_headers(tenant.admin)
    await configure_memory(client, admin, upstream)
    await add_channel(client, admin, upstream, "ranker", models=["rerank-test"])
    stored = await client.post(
        "/api/memories/batch",
        json={"memories": [{"text": text} for text in MEMORIES]},
        headers=auth_headers(tenant.user),
    )
    assert stored.status_code == 201, stored.text


async def set_rerank(client: Client, tenant: TenantRows, auth_headers: AuthHeaders, **fields: Any) -> None:
    response = await client.put(
        "/api/memories/settings", json=BASE_SETTINGS | fields, headers=auth_headers(tenant.admin)
    )
    assert response.status_code == 200, response.text


async def searched(client: Client, headers: dict[str, str], limit: int) -> Any:
    response = await client.post("/api/memories/search", json={"query": QUERY, "limit": limit}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def in_rerank_order(texts: list[str]) -> list[str]:
    """The mock's order: best share of the query's words first, ties in the order given."""
    return sorted(texts, key=lambda text: -rerank_score(QUERY, text))


async def test_the_search_s_best_are_put_in_the_rerank_model_s_order_and_cut_to_the_limit(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await with_memories(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    plain = (await searched(client, user, 6)).json()
    search_order = [hit["memory"]["text"] for hit in plain]
    assert all(hit["rerank_score"] is None for hit in plain)
    assert sorted(search_order) == sorted(MEMORIES)

    await set_rerank(client, tenant_a, auth_headers, rerank_model="rerank-test", rerank_candidates=6)
    response = await searched(client, user, 6)
    assert "x-lyss-search-notice" not in response.headers
    hits = response.json()
    expected = in_rerank_order(search_order)
    assert expected != search_order  # the reranker really reorders this search
    assert [hit["memory"]["text"] for hit in hits] == expected
    assert [hit["rerank_score"] for hit in hits] == [pytest.approx(rerank_score(QUERY, text)) for text in expected]
    # The search's own scores stay, for the caller to see both.
    fused = {hit["memory"]["text"]: hit["fused_score"] for hit in plain}
    assert all(hit["fused_score"] == pytest.approx(fused[hit["memory"]["text"]]) for hit in hits)
    name, sent = upstream.bodies[-1]
    assert (name, sent["model"], sent["query"], sent["documents"]) == ("ranker", "rerank-test", QUERY, search_order)

    # A limit under the candidates: the best `rerank_candidates` of the search are reranked, `limit` kept.
    await set_rerank(client, tenant_a, auth_headers, rerank_model="rerank-test", rerank_candidates=4)
    limited = (await searched(client, user, 2)).json()
    assert upstream.bodies[-1][1]["documents"] == search_order[:4]
    assert [hit["memory"]["text"] for hit in limited] == in_rerank_order(search_order[:4])[:2]

    rows = await usage_rows(session_maker, tenant_a, 4)
    reranks = [row for row in rows if row.endpoint == "rerank"]
    assert len(reranks) == 2
    assert {(str(row.user_id), row.model, row.outcome) for row in reranks} == {
        (str(tenant_a.user.id), "rerank-test", "ok")
    }


async def test_a_failing_rerank_model_leaves_the_search_s_order_and_says_so_in_a_header(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await with_memories(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    search_order = [hit["memory"]["text"] for hit in (await searched(client, user, 3)).json()]
    await set_rerank(client, tenant_a, auth_headers, rerank_model="rerank-test", rerank_candidates=6)
    upstream.behave("ranker", status=500)

    response = await searched(client, user, 3)
    hits = response.json()
    assert [hit["memory"]["text"] for hit in hits] == search_order
    assert all(hit["rerank_score"] is None for hit in hits)
    notice = response.headers["x-lyss-search-notice"]
    assert notice == "Not reranked: The provider failed to answer; the call was not billed."
    assert notice.isascii()
    assert len(notice) <= 300


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rerank_candidates": 1}, "rerank_candidates"),
        ({"rerank_candidates": 101}, "rerank_candidates"),
        ({"rerank_candidates": "many"}, "rerank_candidates"),
        ({"rerank_model": ""}, "rerank_model"),
        ({"rerank_model": "m" * 101}, "rerank_model"),
    ],
)
async def test_bad_rerank_settings_are_refused_naming_the_field(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    fields: dict[str, Any],
    field: str,
) -> None:
    response = await client.put("/api/memories/settings", json=fields, headers=auth_headers(tenant_a.admin))
    assert response.status_code == 400
    assert field in response.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        organization = await session.get(Organization, tenant_a.id)
        assert organization is not None
        assert "memory" not in organization.settings


async def test_the_portal_form_saves_and_shows_the_rerank_settings_and_refuses_bad_ones_by_the_field(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "ranker", models=["rerank-test"])
    await add_channel(client, admin, upstream, "embeddings", models=["embed-test"])
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    page = (await client.get("/portal/settings")).text
    assert option_values(page, "rerank_model") == ["", "embed-test", "rerank-test"]
    assert 'name="rerank_candidates"' in page
    good = {
        "csrf_token": token,
        "enabled": "on",
        "association_threshold": "0.85",
        "chat_memories": "5",
        "rerank_model": "rerank-test",
        "rerank_candidates": "30",
    }

    async def stored() -> dict[str, Any]:
        async with tenant_session(session_maker, tenant_a.id) as session:
            organization = await session.get(Organization, tenant_a.id)
            assert organization is not None
            return dict(organization.settings.get("memory") or {})

    for bad, field, message in [
        ({"rerank_candidates": "1"}, "rerank_candidates", None),
        ({"rerank_candidates": "101"}, "rerank_candidates", None),
        ({"rerank_candidates": "many"}, "rerank_candidates", "Enter a whole number."),
        ({"rerank_candidates": ""}, "rerank_candidates", "This field is required."),
        ({"rerank_model": "unknown-model"}, "rerank_model", "Choose a model that one of your enabled channels serves."),
    ]:
        refused = await client.post("/portal/settings/defaults", data=good | bad)
        assert refused.status_code == 400, bad
        error = field_error(refused.text, field)
        assert error, bad
        if message is not None:
            assert error == message
        assert await stored() == {}

    saved = await client.post("/portal/settings/defaults", data=good)
    assert saved.status_code == 303, saved.text
    assert (await stored())["rerank_model"] == "rerank-test"
    assert (await stored())["rerank_candidates"] == 30
    shown = (await client.get("/portal/settings")).text
    assert '<option value="rerank-test" selected' in shown
    assert 'name="rerank_candidates" type="number" value="30"' in shown

    # None: the searches keep their own order.
    cleared = await client.post("/portal/settings/defaults", data=good | {"rerank_model": ""})
    assert cleared.status_code == 303
    assert (await stored())["rerank_model"] is None


def test_a_notice_header_is_printable_ascii_on_one_line_and_cut_short() -> None:
    value = header_safe("Not reranked: l\u2019upstream a dit\r\nX-Injected: 1\x00" + "x" * 400)
    assert value.startswith("Not reranked: l?upstream a dit X-Injected: 1?xx")
    assert len(value) == 300
