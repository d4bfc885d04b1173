"""Azure OpenAI: OpenAI's format at a deployment URL, with `api-version` and an `api-key` header."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from app.gateway.adapters.base import Adapter, Chunk, Completion, Target, Timeouts, UpstreamError
from app.gateway.adapters.openai import open_stream, openai_chunks, parse_usage, post_json

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(Adapter):
    def _url(self, target: Target, operation: str) -> str:
        # The channel's model mapping names the deployment; Azure ignores the `model` field.
        deployment = quote(target.upstream_model, safe="")
        version = target.api_version or DEFAULT_API_VERSION
        return f"{target.base_url.rstrip('/')}/openai/deployments/{deployment}/{operation}?api-version={version}"

    def _headers(self, target: Target) -> dict[str, str]:
        return {"api-key": target.api_key}

    async def complete(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        answer = await post_json(http, self._url(target, "chat/completions"), self._headers(target), body, timeouts)
        if not isinstance(answer.get("choices"), list):
            raise UpstreamError("the provider's answer has no choices", status=502)
        return Completion(body=answer, usage=parse_usage(answer))

    async def stream(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> AsyncIterator[Chunk]:
        response = await open_stream(http, self._url(target, "chat/completions"), self._headers(target), body, timeouts)
        async for chunk in openai_chunks(response):
            yield chunk

    async def embed(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        answer = await post_json(http, self._url(target, "embeddings"), self._headers(target), body, timeouts)
        return Completion(body=answer, usage=parse_usage(answer))
