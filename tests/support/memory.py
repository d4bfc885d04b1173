"""Memory set up as a tenant admin would: an LLM and an embedding channel on the mock provider, then the settings."""

from __future__ import annotations

from tests.support.clients import Client
from tests.support.gateway import add_channel
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
