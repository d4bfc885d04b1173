"""Provider adapters, one module each, found by the provider type's `api_format`."""

from __future__ import annotations

from app.gateway.adapters.anthropic import AnthropicAdapter
from app.gateway.adapters.azure import AzureOpenAIAdapter
from app.gateway.adapters.base import Adapter
from app.gateway.adapters.echo import EchoAdapter
from app.gateway.adapters.gemini import GeminiAdapter
from app.gateway.adapters.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "azure": AzureOpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "echo": EchoAdapter(),
    "gemini": GeminiAdapter(),
}
