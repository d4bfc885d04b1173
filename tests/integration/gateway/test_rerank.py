"""/v1/rerank over real HTTP to the mock provider: ranking, shapes, billing per token and per search unit,
failover, input and answer checks, tenant isolation; and Lyss's own `client.rerank`."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.client import GatewayRefused, chat_token, rerank
from app.gateway.engine import create_gateway
from app.settings import Settings
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, issue_key, set_price, usage_rows
from tests.support.mock_upstream import MockUpstream, rerank_score
from tests.support.tenants import TenantRows

QUERY = "red apple pie"
DOCUMENTS = ["a green apple", "red apple pie recipe", "the weather today", "pie with red cherries"]


def rerank_body(**fields: Any) -> dict[str, Any]:
    return {"model": "rerank-test", "query": QUERY, "documents": DOCUMENTS, **fields}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


async def rerank_key(
    client: Client, tenant: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders, **key_fields: Any
) -> tuple[str, dict[str, Any]]:
    await add_channel(client, auth_headers(tenant.admin), upstream, "ranker", models=["rerank-test"])
    return await issue_key(client, auth_headers(tenant.user), **key_fields)


async def test_results_are_ranked_by_the_providers_scores_best_first_without_documents_by_default(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = sorted(
        ((index, rerank_score(QUERY, text)) for index, text in enumerate(DOCUMENTS)), key=lambda pair: -pair[1]
    )
    assert [(item["index"], item["relevance_score"]) for item in answer["results"]] == expected
    assert [item["index"] for item in answer["results"]] == [1, 3, 0, 2]
    assert all("document" not in item for item in answer["results"])
    assert answer["model"] == "rerank-test"
    assert answer["id"]
    words = sum(len(QUERY.split()) + len(text.split()) for text in DOCUMENTS)
    assert answer["usage"] == {"total_tokens": words}  # the provider's own count (Jina's shape)
    assert answer["meta"] == {"billed_units": {"search_units": 1}}
    assert response.headers["x-lyss-channel"] == "ranker"
    name, sent = upstream.bodies[0]
    assert (name, sent) == ("ranker", {"model": "rerank-test", "query": QUERY, "documents": DOCUMENTS})


async def test_top_n_return_documents_and_object_documents(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    objects = [{"text": text} for text in DOCUMENTS]
    response = await client.post(
        "/v1/rerank", json=rerank_body(documents=objects, top_n=2, return_documents=True), headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {"index": 1, "relevance_score": 1.0, "document": {"text": DOCUMENTS[1]}},
        {"index": 3, "relevance_score": pytest.approx(2 / 3), "document": {"text": DOCUMENTS[3]}},
    ]
    # Plain strings upstream (both Cohere v2 and Jina take them); return_documents is answered by Lyss.
    assert upstream.bodies[0][1] == {"model": "rerank-test", "query": QUERY, "documents": DOCUMENTS, "top_n": 2}


async def test_a_cohere_shaped_answer_is_billed_per_search_unit_and_the_usage_row_says_so(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    # 3 credits per token, 2,000 credits ($0.002) per search unit.
    await set_price(client, admin, "rerank-test", 3_000_000, 2_000_000_000)
    upstream.behave("ranker", cohere=True)
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    documents = [f"document {number} about apples" for number in range(150)]  # two search units
    response = await client.post("/v1/rerank", json=rerank_body(documents=documents, top_n=3), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["meta"] == {"billed_units": {"search_units": 2}}
    assert len(answer["results"]) == 3
    # Cohere reports no tokens: Lyss estimates them (about four characters a token, the query with each document).
    estimate = sum(-(-(len(QUERY) + len(text)) // 4) for text in documents)
    assert answer["usage"] == {"total_tokens": estimate}
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.outcome, row.status_code) == ("rerank", "ok", 200)
    assert (row.prompt_tokens, row.completion_tokens) == (estimate, 2)
    assert row.cost == estimate * 3 + 2 * 2_000
    assert (row.details["search_units"], row.details["documents"]) == (2, 150)


async def test_a_built_in_reranker_costs_its_listed_price_per_search(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    """rerank-v3.5 is listed at $2.00 per 1,000 searches: 2,000 credits a search unit, nothing per token."""
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "cohere", models=["rerank-v3.5"])
    upstream.behave("cohere", cohere=True)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/rerank", json=rerank_body(model="rerank-v3.5"), headers=bearer(key))
    assert response.status_code == 200, response.text
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.completion_tokens, row.cost) == (1, 2_000)


async def test_a_key_that_cannot_afford_the_worst_case_is_refused_with_429_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await set_price(client, auth_headers(tenant_a.admin), "rerank-test", 0, 2_000_000_000)
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers, quota=1_999)
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 429, response.text
    error = error_of(response)
    assert error["code"] == "insufficient_quota"
    assert "could cost up to $0.002" in error["message"]
    assert "fewer or shorter documents" in error["message"]
    assert upstream.calls["ranker"] == 0
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.endpoint, row.model, row.outcome, row.status_code, row.cost) == (
        "rerank",
        "rerank-test",
        "refused",
        429,
        0,
    )
    assert row.details["reason"] == "budget"


async def test_failover_to_the_next_channel_when_the_first_answers_500(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "first", models=["rerank-test"], priority=10)
    await add_channel(client, admin, upstream, "second", models=["rerank-test"], priority=5)
    upstream.behave("first", status=500)
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["x-lyss-channel"] == "second"
    assert (upstream.calls["first"], upstream.calls["second"]) == (1, 1)
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert [attempt["status"] for attempt in row.details["attempts"]] == [500, 200]


async def test_a_providers_400_is_the_callers_error_and_no_other_channel_is_tried(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "first", models=["rerank-test"], priority=10)
    await add_channel(client, admin, upstream, "second", models=["rerank-test"], priority=5)
    upstream.behave("first", status=400, error_code="invalid_request_error")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert upstream.calls["second"] == 0
    again = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert upstream.calls["first"] == 2  # not cooled down: the request was at fault, not the channel
    assert again.status_code == 400


@pytest.mark.parametrize(
    "answer",
    [
        {"results": "none"},
        {"data": []},
        {"results": [{"index": 9, "relevance_score": 0.5}]},
        {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}]},
        {"results": [{"index": 0, "relevance_score": "high"}]},
        {"results": [{"index": True, "relevance_score": 0.5}]},
    ],
    ids=["results-not-a-list", "no-results", "index-out-of-range", "index-twice", "score-not-a-number", "bool-index"],
)
async def test_a_malformed_answer_is_a_502_in_the_openai_shape_and_costs_nothing(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    answer: dict[str, Any],
) -> None:
    await set_price(client, auth_headers(tenant_a.admin), "rerank-test", 1_000_000, 1_000_000)
    upstream.behave("ranker", rerank_answer=answer)
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 502, response.text
    assert error_of(response)["type"] == "upstream_error"
    [row] = await usage_rows(session_maker, tenant_a, 1)
    assert (row.outcome, row.status_code, row.cost) == ("upstream_error", 502, 0)


BAD_INPUT: list[tuple[dict[str, Any], str]] = [
    ({"model": ""}, "model"),
    ({"model": 3}, "model"),
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": ["a"]}, "query"),
    ({"documents": []}, "documents"),
    ({"documents": "one text"}, "documents"),
    ({"documents": [1]}, "documents[0]"),
    ({"documents": [{"title": "x"}]}, "documents[0].text"),
    ({"documents": ["x"] * 1001}, "documents"),
    ({"top_n": 0}, "top_n"),
    ({"top_n": "2"}, "top_n"),
    ({"return_documents": "yes"}, "return_documents"),
    ({"max_tokens_per_doc": -1}, "max_tokens_per_doc"),
]


@pytest.mark.parametrize(("change", "param"), BAD_INPUT, ids=[f"{param}-{n}" for n, (_, param) in enumerate(BAD_INPUT)])
async def test_bad_input_is_a_400_naming_the_field_and_nothing_is_sent(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    change: dict[str, Any],
    param: str,
) -> None:
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    response = await client.post("/v1/rerank", json=rerank_body(**change), headers=bearer(key))
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param
    assert upstream.calls["ranker"] == 0


async def test_missing_fields_are_named(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    for field in ("model", "query", "documents"):
        body = {name: value for name, value in rerank_body().items() if name != field}
        response = await client.post("/v1/rerank", json=body, headers=bearer(key))
        assert (response.status_code, error_of(response)["param"]) == (400, field)


async def test_a_key_cannot_use_another_tenants_rerank_channel_and_models_lists_rerank_models(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(client, auth_headers(tenant_b.admin), upstream, "theirs", models=["rerank-theirs"])
    key, _ = await rerank_key(client, tenant_a, upstream, auth_headers)
    response = await client.post("/v1/rerank", json=rerank_body(model="rerank-theirs"), headers=bearer(key))
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"
    assert upstream.calls["theirs"] == 0
    models = await client.get("/v1/models", headers=bearer(key))
    assert [model["id"] for model in models.json()["data"]] == ["rerank-test"]


async def test_a_channel_type_without_a_rerank_api_is_not_routed_to(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    await add_channel(
        client, auth_headers(tenant_a.admin), upstream, "claude", kind="anthropic", models=["rerank-test"]
    )
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    response = await client.post("/v1/rerank", json=rerank_body(), headers=bearer(key))
    assert response.status_code == 404
    assert upstream.calls["claude"] == 0


async def test_lyss_own_rerank_call_returns_indices_and_scores_and_is_billed_like_v1(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "ranker", models=["rerank-test"])
    redis = Redis.from_url(settings.redis_url or "")
    gateway = create_gateway(settings, session_maker, redis, SecretBox(settings.encryption_keyring))
    try:
        async with tenant_session(session_maker, tenant_a.id) as session:
            token = await chat_token(session, tenant_a.user.id)
            await session.commit()
        ranking = await rerank(gateway, token, "rerank-test", QUERY, DOCUMENTS, top_n=2)
        with pytest.raises(GatewayRefused) as refused:
            await rerank(gateway, token, "no-such-reranker", QUERY, DOCUMENTS)
    finally:
        await gateway.close()
        await redis.aclose()
    assert ranking == [(1, 1.0), (3, pytest.approx(2 / 3))]
    assert refused.value.status_code == 404
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert sorted((row.endpoint, row.outcome) for row in rows) == [("rerank", "ok"), ("rerank", "refused")]
