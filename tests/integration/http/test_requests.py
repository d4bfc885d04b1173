"""What every request gets: a request id, a JSON access log line with the tenant, errors that reveal nothing."""

from __future__ import annotations

import json

import msgspec
import pytest

from app.observability.logging import configure_logging
from app.settings import Settings
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.gateway import add_channel, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import FORM_TOKEN
from tests.support.tenants import TEST_PASSWORD, TenantRows


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("trace-42.a:b_c", True), ("x" * 129, False), ("has space", False), ("<script>", False)],
)
async def test_request_id_is_echoed_only_when_it_is_a_plain_token(
    client: Client,
    sent: str,
    echoed: bool,
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    returned = response.headers["x-request-id"]
    if echoed:
        assert returned == sent
    else:
        assert returned != sent
        assert len(returned) == 32
        int(returned, 16)


async def test_every_response_carries_a_request_id_even_a_404(client: Client) -> None:
    first = await client.get("/no/such/route")
    second = await client.get("/no/such/route")
    assert first.status_code == 404
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_access_log_is_json_with_request_and_tenant_ids(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    await client.get("/api/me", headers={**auth_headers(tenant_a.user), "X-Request-ID": "req-with-tenant"})
    await client.get("/healthz", headers={"X-Request-ID": "req-anonymous"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line.get("logger") == "lyss.access"}
    assert access["req-with-tenant"]["tenant_id"] == str(tenant_a.id)
    assert access["req-with-tenant"]["status"] == 200
    assert access["req-with-tenant"]["path"] == "/api/me"
    assert "tenant_id" not in access["req-anonymous"]


async def test_a_database_or_redis_out_of_reach_is_a_503_to_retry_that_reveals_nothing(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders, upstream: MockUpstream
) -> None:
    # A key that could make a call: it gets as far as its reservation, which is in Redis.
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "primary", models=["gpt-test"])
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    broken = msgspec.structs.replace(settings, database_url="postgresql://lyss_app:s3cret@127.0.0.1:1/lyss_db")
    async with app_client(broken) as client:
        response = await client.get("/api/me", headers={**auth_headers(tenant_a.user), "X-Request-ID": "boom-1"})
        page = await client.get("/portal/login")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "status_code": 503,
        "detail": "The service is temporarily unavailable; retry in a few seconds.",
        "request_id": "boom-1",
    }
    for text in (response.text, page.text):
        assert "127.0.0.1" not in text
        assert "s3cret" not in text

    # Redis gone: the gateway answers in its own error shape, the portal with a page; both say to retry.
    no_redis = msgspec.structs.replace(settings, redis_url="redis://:s3cret@127.0.0.1:1/0")
    async with app_client(no_redis) as client:
        call = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        form = await client.get("/portal/login")
        form_token = FORM_TOKEN.search(form.text)
        assert form_token, form.text
        login = await client.post(
            "/portal/login",
            data={
                "tenant": tenant_a.slug,
                "email": tenant_a.user.email,
                "password": TEST_PASSWORD,
                "form_token": form_token[1],
            },
        )
    assert call.status_code == 503
    assert call.headers["retry-after"] == "5"
    assert call.json()["error"]["type"] == "service_unavailable"
    assert call.json()["error"]["code"] == "service_unavailable"
    assert login.status_code == 503
    assert "retry in a few seconds" in login.text
    for text in (call.text, login.text):
        assert "s3cret" not in text
        assert "127.0.0.1" not in text
