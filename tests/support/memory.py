"""Memory as tests drive it: set up as a tenant admin would (an LLM and an embedding channel on the mock
provider, then the settings), and extraction jobs run to their end."""

from __future__ import annotations

import json
from typing import Any

from app.settings import Settings
from tests.support.clients import Client
from tests.support.gateway import add_channel
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream


async def configure_memory(
    client: Client, admin: dict[str, str], upstream: MockUpstream, dimensions: int = 256
) -> None:
    await add_channel(client, admin, upstream, "mem-llm", models=["memory-llm"])
    await add_channel(client, admin, upstream, "mem-embed", models=["embed-test"])
    upstream.behave("mem-embed", dimensions=dimensions)
    response = await client.put(
        "/api/memories/settings",
        json={"llm_model": "memory-llm", "embedding_model": "embed-test"},
        headers=admin,
    )
    assert response.status_code == 200, response.text


def decisions(*items: dict[str, Any]) -> str:
    """The memory model's answer deciding on new facts (ADD, UPDATE, DELETE, NONE)."""
    return json.dumps({"memory": list(items)})


async def extract(
    client: Client, headers: dict[str, str], settings: Settings, content: str, **fields: Any
) -> dict[str, Any]:
    """Submit an extraction job for one message (with the request's other `fields`) and run it to its end on a
    real worker."""
    response = await client.post(
        "/api/memories", json={"messages": [{"role": "user", "content": content}], **fields}, headers=headers
    )
    assert response.status_code == 202, response.text
    async with running_worker(settings):
        return await wait_for_status(client, headers, response.json()["id"], {"succeeded", "failed", "dead"})
