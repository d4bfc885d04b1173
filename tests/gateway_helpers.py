"""Helpers for gateway tests: channels and API keys made through the management API, as an admin would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import httpx2

from db.auth import User
from tests.conftest import Client, TenantRows
from tests.mock_upstream import MockUpstream

AuthHeaders = Callable[[User], dict[str, str]]


async def add_channel(
    client: Client,
    admin_headers: dict[str, str],
    upstream: MockUpstream,
    name: str,
    *,
    models: list[str] | None = None,
    kind: str = "openai-compatible",
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "name": name,
        "type": kind,
        "models": models or ["gpt-test"],
        "keys": [f"key-of-{name}"],
        "base_url": upstream.base_url(name),
        **fields,
    }
    response = await client.post("/api/channels", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def issue_key(client: Client, headers: dict[str, str], **fields: Any) -> tuple[str, dict[str, Any]]:
    response = await client.post("/api/tokens", json={"name": "test key", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["key"], dict(response.json()["token"])


def sdk_http(client: Client) -> httpx2.AsyncClient:
    """A client for the official SDKs (built on httpx2) on the same in-process app as `client`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=transport.app), base_url=str(client.base_url))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_body(model: str = "gpt-test", text: str = "hello there", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


async def set_price(client: Client, admin_headers: dict[str, str], model: str, prompt: int, completion: int) -> None:
    response = await client.put(
        f"/api/model-prices/{model}",
        json={"prompt_price": prompt, "completion_price": completion},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text


def admin_of(tenant: TenantRows, auth_headers: AuthHeaders) -> dict[str, str]:
    return auth_headers(tenant.admin)
