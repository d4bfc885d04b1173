"""Bad input gets a 4xx with a JSON body that names the problem: never a 500, never a stack trace."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from app.settings import Settings
from tests.conftest import Client, TenantRows, app_client
from tests.gateway_helpers import AuthHeaders


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
