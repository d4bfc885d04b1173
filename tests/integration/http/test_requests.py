"""What every request gets: a request id, a JSON access log line with the tenant, a 500 that reveals nothing."""

from __future__ import annotations

import json

import msgspec
import pytest

from app.observability.logging import configure_logging
from app.settings import Settings
from tests.support.clients import AuthHeaders, Client, app_client
from tests.support.tenants import TenantRows


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


async def test_an_unexpected_failure_is_a_500_that_reveals_nothing(
    settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    broken = msgspec.structs.replace(settings, database_url="postgresql://lyss_app:s3cret@127.0.0.1:1/lyss_db")
    async with app_client(broken) as client:
        response = await client.get("/api/me", headers={**auth_headers(tenant_a.user), "X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {
        "status_code": 500,
        "detail": "Internal server error; quote the request id when reporting it.",
        "request_id": "boom-1",
    }
    assert "127.0.0.1" not in response.text
    assert "s3cret" not in response.text
