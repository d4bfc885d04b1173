"""Gateway helpers: channels, API keys and prices made through the management API as an admin would; usage rows."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import httpx
import httpx2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import UsageLog
from db.session import tenant_session
from tests.support.clients import Client
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


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


def token_id_of(token: dict[str, Any]) -> UUID:
    return UUID(token["id"])


def sdk_http(client: Client) -> httpx2.AsyncClient:
    """A client for the official SDKs (built on httpx2) on the same in-process app as `client`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=transport.app), base_url=str(client.base_url))


def chat_body(model: str = "gpt-test", text: str = "hello there", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


async def set_price(client: Client, admin_headers: dict[str, str], model: str, prompt: int, completion: int) -> None:
    response = await client.put(
        f"/api/model-prices/{model}",
        json={"prompt_price": prompt, "completion_price": completion},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text


async def usage_rows(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, expected: int
) -> list[UsageLog]:
    """The tenant's usage log once the flusher has written `expected` rows (it runs every half second)."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        async with tenant_session(session_maker, tenant.id) as session:
            rows = list((await session.scalars(select(UsageLog).order_by(UsageLog.created_at))).all())
        if len(rows) >= expected or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)
