"""Bad input gets a 4xx with a JSON body that names the problem: never a 500, never a stack trace."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.settings import Settings
from db.chat import Conversation
from db.chat import Message as ChatMessage
from db.memory import Memory
from db.models import Base
from db.provider import ApiToken, Channel, ModelPrice
from db.session import tenant_session
from db.tenant import Job
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.platform import super_admin_of
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def assert_clean_error(response: Any, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    text = response.text
    for mention in mentions:
        assert mention in text, text
    for leak in ("Traceback", 'File "', "sqlalchemy", "asyncpg"):
        assert leak not in text


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b'{"tenant": "acme", "email": ', ["Input data was truncated"]),
        (b"[1, 2, 3]", ["Validation failed", "Expected `object`"]),
        (b'{"tenant": "acme", "email": "a@b.example.com"}', ["password"]),
        (b'{"tenant": "acme", "email": 42, "password": "x"}', ["email", "Expected `str`"]),
        (b'{"tenant": "acme", "email": "a@b.example.com", "password": "x", "admin": true}', ["admin"]),
        (b'{"tenant": "", "email": "a@b.example.com", "password": "x"}', ["tenant"]),
        (b'{"tenant": "a", "email": "a@b.example.com", "password": "x", "session": "root"}', ["session"]),
    ],
    ids=["truncated", "not-an-object", "missing-field", "wrong-type", "unknown-field", "empty-slug", "bad-enum"],
)
async def test_malformed_login_bodies(client: Client, body: bytes, mentions: list[str]) -> None:
    response = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert_clean_error(response, 400, *mentions)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_body_that_is_not_json_is_refused(client: Client, content_type: str) -> None:
    response = await client.post(
        "/api/auth/login",
        content=b'{"tenant": "a", "email": "a@b.example.com", "password": "x"}',
        headers={"Content-Type": content_type},
    )
    assert_clean_error(response, 415, "application/json", content_type)


async def test_an_oversized_body_is_refused(settings: Settings) -> None:
    small = msgspec.structs.replace(settings, max_request_body_bytes=2048)
    async with app_client(small) as client:
        response = await client.post(
            "/api/auth/login",
            content=b'{"tenant": "a", "email": "a@b.example.com", "password": "' + b"x" * 4096 + b'"}',
            headers={"Content-Type": "application/json"},
        )
    assert_clean_error(response, 413)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/tokens", {"name": "k", "tpm_limit": 10**12}, "tpm_limit"),
        ("/api/tokens", {"name": "k", "rpm_limit": 2**31}, "rpm_limit"),
        ("/api/tokens", {"name": "k", "quota": 2**63}, "quota"),
        ("/api/model-prices/big", {"prompt_price": 2**63, "completion_price": 1}, "prompt_price"),
        (
            "/api/model-prices/big",
            {"prompt_price": 1, "completion_price": 1, "cached_prompt_price": 2**63},
            "cached_prompt_price",
        ),
    ],
)
async def test_numbers_beyond_their_columns_are_a_400_not_a_database_error(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, path: str, body: dict[str, Any], field: str
) -> None:
    method = client.put if path.startswith("/api/model-prices") else client.post
    response = await method(path, json=body, headers=auth_headers(tenant_a.admin))
    assert_clean_error(response, 400, field)


async def test_overlong_fields_are_refused_before_any_work(client: Client, tenant_a: TenantRows) -> None:
    response = await client.post(
        "/api/auth/login", json={"tenant": tenant_a.slug, "email": "a@b.example.com", "password": "x" * 5000}
    )
    assert_clean_error(response, 400, "password")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/api/auth/oauth-providers/not-a-uuid"),
        ("GET", "/api/auth/tenants/" + "x" * 300 + "/oauth-providers"),
        ("GET", "/api/auth/oauth/callback?state=" + "s" * 300),
    ],
)
async def test_bad_paths_and_queries(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path, json={} if method == "PATCH" else None)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text


async def test_a_failed_invitation_acceptance_leaves_nothing_behind(client: Client) -> None:
    response = await client.post(
        "/api/auth/invitations/accept", json={"token": "linv_" + "0" * 32 + "_forged-token", "password": "x" * 20}
    )
    assert_clean_error(response, 404, "invitation")


# --- NUL characters, refused once at the edge -----------------------------------------------------

NUL = "\u0000"


BEFORE_SIGN_IN: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/api/auth/login", {"tenant": f"de{NUL}mo", "email": "a@b.example.com", "password": "x"}, "tenant"),
    ("POST", "/api/auth/login", {"tenant": "demo", "email": f"a{NUL}@b.example.com", "password": "x"}, "email"),
    ("POST", "/api/auth/signup", {"tenant": f"de{NUL}mo", "email": "a@b.example.com", "password": "x"}, "tenant"),
    ("GET", "/api/auth/tenants/de%00mo/oauth-providers", None, "tenant_slug"),
]


async def test_nul_characters_are_refused_before_sign_in(client: Client, subtests: pytest.Subtests) -> None:
    for method, path, body, field in BEFORE_SIGN_IN:
        with subtests.test(msg=f"{method} {path} {field}"):
            response = await client.request(method, path, json=body)
            assert_clean_error(response, 400, f"`{field}`", "NUL")


A_CHANNEL = {"name": "c", "type": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}


SIGNED_IN: list[tuple[str, str, dict[str, Any] | None, str, type[Base] | None]] = [
    ("GET", "/api/usage?model=a%00b", None, "model", None),
    ("GET", "/api/usage/daily?model=a%00b", None, "model", None),
    ("GET", "/api/jobs?kind=a%00b", None, "kind", None),
    ("POST", "/api/memories", {"text": f"likes{NUL}tea", "infer": False}, "text", Memory),
    ("POST", "/api/memories", {"text": "t", "infer": False, "metadata": {"a": [NUL]}}, "metadata.a[0]", Memory),
    ("POST", "/api/memories", {"messages": [{"role": "user", "content": NUL}]}, "messages[0].content", Memory),
    ("POST", "/api/jobs", {"kind": "test.effect", "payload": {"marker": f"a{NUL}"}}, "payload.marker", Job),
    ("POST", "/api/jobs", {"kind": "test.effect", "payload": {f"k{NUL}": 1}}, "payload", Job),
    ("POST", "/api/conversations", {"model": "gpt-test", "title": f"a{NUL}b"}, "title", Conversation),
    ("POST", "/api/channels", {**A_CHANNEL, "models": [f"m{NUL}"]}, "models[0]", Channel),
    ("POST", "/api/tokens", {"name": "k", "allowed_models": [f"m{NUL}"]}, "allowed_models[0]", ApiToken),
    ("PUT", "/api/model-prices/a%00b", {"prompt_price": 1, "completion_price": 1}, "model", ModelPrice),
]  # fmt: skip


async def test_nul_characters_are_refused_at_the_edge_naming_the_field_and_nothing_is_written(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    subtests: pytest.Subtests,
) -> None:
    async def rows(table: type[Base] | None) -> int:
        if table is None:
            return 0
        async with tenant_session(session_maker, tenant_a.id) as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)

    for method, path, body, field, table in SIGNED_IN:
        with subtests.test(msg=f"{method} {path} {field}"):
            before = await rows(table)
            response = await client.request(method, path, json=body, headers=auth_headers(tenant_a.admin))
            assert_clean_error(response, 400, f"`{field}`", "NUL")
            assert await rows(table) == before


async def test_a_nul_in_a_message_stores_no_turn(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post(
        f"/api/conversations/{tenant_a.conversation.id}/messages",
        json={"content": f"hello{NUL}"},
        headers=auth_headers(tenant_a.user),
    )
    assert_clean_error(response, 400, "`content`", "NUL")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(ChatMessage)) == 0


async def test_a_portal_form_with_a_nul_names_the_field_on_an_html_page(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    response = await client.post(
        "/portal/channels/new", data={"csrf_token": csrf, **A_CHANNEL, "name": f"c{NUL}", "models": "m"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "`name` contains a NUL character" in response.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0


# --- numbers and dates in query strings ----------------------------------------------------------


QUERY_MISTAKES = [
    ("/api/usage?status_code=9999999999999", "status_code"),
    ("/api/usage?status_code=-2720044104", "status_code"),
    ("/api/usage?status_code=42", "status_code"),
    ("/api/jobs?before=0.5", "before"),
    ("/api/usage/daily?until=0.5", "until"),
    ("/api/usage?since=1700000000", "since"),
    ("/api/memories?before=1e3", "before"),
]


async def test_query_numbers_are_bounded_and_timestamps_are_dates(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, subtests: pytest.Subtests
) -> None:
    for path, field in QUERY_MISTAKES:
        with subtests.test(msg=path):
            response = await client.get(path, headers=auth_headers(tenant_a.admin))
            assert response.status_code == 400, response.text
            assert field in response.text
            assert "Traceback" not in response.text


async def test_dates_in_query_strings_still_filter(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.admin)
    assert (await client.get("/api/jobs?before=2000-01-01T00:00:00Z", headers=headers)).json() == []
    later = await client.get("/api/jobs?before=2999-01-01T00:00:00Z", headers=headers)
    assert [job["id"] for job in later.json()] == [str(tenant_a.job.id)]


async def test_the_portal_usage_page_bounds_its_status_filter(client: Client, tenant_a: TenantRows) -> None:
    await sign_in(client, tenant_a, tenant_a.admin.email)
    response = await client.get("/portal/usage?status_code=99999999999")
    assert response.status_code == 400, response.text
    assert field_error(response.text, "status_code")


# --- JSON bodies are typed strictly ----------------------------------------------------------------


async def test_a_boolean_must_be_a_json_boolean(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, subtests: pytest.Subtests
) -> None:
    headers = auth_headers(tenant_a.admin)
    for value in (0, 1, "true", "false", "yes"):
        with subtests.test(msg=repr(value)):
            response = await client.patch("/api/tenant/policy", json={"allow_self_signup": value}, headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["extra"][0]["key"] == "allow_self_signup"
    assert (await client.get("/api/tenant/policy", headers=headers)).json()["allow_self_signup"] is False
    kept = await client.patch("/api/tenant/policy", json={"allow_self_signup": None}, headers=headers)  # as it is
    assert kept.json()["allow_self_signup"] is False
    turned_on = await client.patch("/api/tenant/policy", json={"allow_self_signup": True}, headers=headers)
    assert turned_on.json()["allow_self_signup"] is True


async def test_numbers_in_strings_are_not_numbers(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    response = await client.post(
        "/api/tokens", json={"name": "k", "rpm_limit": "5"}, headers=auth_headers(tenant_a.admin)
    )
    assert response.status_code == 400, response.text
    assert response.json()["extra"][0]["key"] == "rpm_limit"


async def test_json_nested_too_deep_is_refused(client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders) -> None:
    headers = {**auth_headers(tenant_a.admin), "Content-Type": "application/json"}

    def memory(depth: int) -> bytes:
        return b'{"text": "tea", "infer": false, "metadata": {"x": ' + b"[" * depth + b"1" + b"]" * depth + b"}}"

    for depth in (64, 5000):
        response = await client.post("/api/memories", content=memory(depth), headers=headers)
        assert_clean_error(response, 400, "nested more than 64 levels")
    stored = await client.post("/api/memories", content=memory(60), headers=headers)
    assert stored.status_code == 201, stored.text


# --- a row deleted while it is being changed -------------------------------------------------------


async def test_a_change_racing_a_deletion_is_a_404_never_a_500(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    outcomes: Counter[tuple[int, int]] = Counter()
    for round_number in range(20):
        created = await client.post(
            "/api/conversations", json={"model": "gpt-test", "title": f"r{round_number}"}, headers=headers
        )
        assert created.status_code == 201, created.text
        path = f"/api/conversations/{created.json()['id']}"
        changed, deleted = await asyncio.gather(
            client.patch(path, json={"title": "renamed"}, headers=headers), client.delete(path, headers=headers)
        )
        outcomes[(changed.status_code, deleted.status_code)] += 1
        assert changed.status_code in (200, 404), changed.text
        assert deleted.status_code == 204, deleted.text
        if changed.status_code == 200:
            assert changed.json()["title"] == "renamed"
        assert (await client.get(path, headers=headers)).status_code == 404
    assert set(outcomes) <= {(200, 204), (404, 204)}


async def test_renaming_a_key_to_a_name_its_user_already_has_is_a_409(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    first = (await client.post("/api/tokens", json={"name": "one"}, headers=headers)).json()["token"]
    assert (await client.post("/api/tokens", json={"name": "two"}, headers=headers)).status_code == 201
    response = await client.patch(f"/api/tokens/{first['id']}", json={"name": "two"}, headers=headers)
    assert_clean_error(response, 409, "already has a key named 'two'")
    assert (await client.get(f"/api/tokens/{first['id']}", headers=headers)).json()["name"] == "one"


async def test_every_route_that_reads_a_body_says_so_when_it_gets_none(
    client: Client,
    app: Litestar,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    subtests: pytest.Subtests,
) -> None:
    # Generated from the route table, so that a route added later is covered too.
    routes = [
        (method, route.path, str(handler.parsed_data_field.annotation))
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/api/")
        for handler in route.route_handlers
        for method in handler.http_methods & {"POST", "PUT", "PATCH"}
        if handler.parsed_data_field is not None and not handler.parsed_data_field.is_optional
    ]
    assert len(routes) >= 25
    # The platform operator's routes refuse anyone else before reading a body.
    operator = auth_headers(await super_admin_of(session_maker, tenant_a))
    for method, path, body_type in routes:
        headers = operator if path.startswith("/api/platform/") else auth_headers(tenant_a.admin)
        url = re.sub(r"\{[^}:]+:uuid\}", str(uuid7()), re.sub(r"\{[^}:]+:str\}", "x", path))
        with subtests.test(method=method, path=path):
            for extra in ({}, {"Content-Type": "application/json", "Content-Length": "0"}):
                response = await client.request(method, url, headers=headers | extra)
                assert response.status_code == 400, (method, url, response.text)
                detail = response.json()["detail"]
                assert detail.startswith("This request needs a"), detail
                multipart = "UploadFile" in body_type
                assert ("multipart/form-data" in detail) == multipart, detail
