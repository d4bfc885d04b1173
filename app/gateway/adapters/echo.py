"""Echo: a built-in provider that answers locally, with no network and no key, so a new install works at once.

It repeats the last user message; tokens are counted as words. Enabled only where the operator allows it
(LYSS_ECHO_PROVIDER; on by default with the embedded database).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from app.gateway.adapters.base import Adapter, Chunk, Completion, Target, Timeouts, Usage

EMBEDDING_DIMENSIONS = 16


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _prompt_words(body: dict[str, Any]) -> tuple[list[str], int]:
    messages = body.get("messages") or []
    words = sum(len(_text_of(message.get("content")).split()) for message in messages if isinstance(message, dict))
    last_user = next(
        (_text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), ""
    )
    reply = ["echo:", *last_user.split()]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    return (reply[: int(limit)] if isinstance(limit, int) else reply), max(words, 1)


class EchoAdapter(Adapter):
    async def complete(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> Completion:
        reply, prompt_tokens = _prompt_words(body)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(reply))
        answer = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.upstream_model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " ".join(reply)}, "finish_reason": "stop"}
            ],
            "usage": {**msgspec.structs.asdict(usage), "total_tokens": usage.prompt_tokens + usage.completion_tokens},
        }
        return Completion(body=answer, usage=usage)

    async def stream(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        reply, prompt_tokens = _prompt_words(body)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": target.upstream_model,
        }
        for position, word in enumerate(reply):
            delta = {"role": "assistant", "content": word} if position == 0 else {"content": f" {word}"}
            raw = msgspec.json.encode({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            yield Chunk(raw=raw, tokens=1)
        yield Chunk(raw=msgspec.json.encode({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply),
            "total_tokens": prompt_tokens + len(reply),
        }
        yield Chunk(
            raw=msgspec.json.encode({**base, "choices": [], "usage": usage}),
            usage=Usage(prompt_tokens, len(reply)),
            usage_only=True,
        )

    async def embed(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs or []]
        data = []
        for index, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            vector = [(byte - 128) / 128 for byte in digest[:EMBEDDING_DIMENSIONS]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(max(len(text.split()), 1) for text in texts)
        usage = Usage(prompt_tokens=tokens)
        answer = {
            "object": "list",
            "data": data,
            "model": target.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Completion(body=answer, usage=usage)
