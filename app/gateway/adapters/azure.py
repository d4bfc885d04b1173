"""Azure OpenAI: OpenAI's format at a deployment URL, with `api-version` and an `api-key` header."""

from __future__ import annotations

from urllib.parse import quote

from app.gateway.adapters.base import Target
from app.gateway.adapters.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    """Everything of the OpenAI adapter but where the call goes and how the key is sent."""

    # A deployment URL has no rerank endpoint (Azure serves Cohere's rerankers as separate serverless APIs).
    supports_rerank = False

    def _url(self, target: Target, path: str) -> str:
        # The channel's model mapping names the deployment; Azure ignores the `model` field.
        deployment = quote(target.upstream_model, safe="")
        version = target.api_version or DEFAULT_API_VERSION
        return f"{target.base_url.rstrip('/')}/openai/deployments/{deployment}{path}?api-version={version}"

    def _headers(self, target: Target) -> dict[str, str]:
        return {"api-key": target.api_key}
