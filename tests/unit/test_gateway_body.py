"""How /v1 reads a request body from the ASGI server: it stops at the announced length, as granian sends an
empty last message after the body, and reads a body of unannounced length to its last message."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from app.gateway.errors import GatewayError
from app.gateway.v1 import GatewayApi, _Request

BODY = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}'


def _receive(messages: list[dict[str, Any]]) -> Any:
    pending: Iterator[dict[str, Any]] = iter(messages)

    async def receive() -> dict[str, Any]:
        message = next(pending, None)
        if message is None:
            raise AssertionError("the body was read past its last message")
        return message

    return receive


async def _read(request: _Request, messages: list[dict[str, Any]], limit: int = 1_000_000) -> tuple[Any, int]:
    api = SimpleNamespace(max_body_bytes=limit)
    return await GatewayApi._body(api, request, _receive(messages))  # type: ignore[arg-type]


async def test_a_body_of_the_announced_length_is_not_waited_on_for_the_empty_last_message() -> None:
    # Granian's order: the body with more_body, then an empty last message; the second must not be awaited.
    messages = [{"type": "http.request", "body": BODY, "more_body": True}]
    body, size = await _read(_Request(content_length=len(BODY)), messages)
    assert body["model"] == "gpt-test"
    assert size == len(BODY)


async def test_a_body_in_pieces_is_read_up_to_its_announced_length() -> None:
    half = len(BODY) // 2
    messages = [
        {"type": "http.request", "body": BODY[:half], "more_body": True},
        {"type": "http.request", "body": BODY[half:], "more_body": True},
    ]
    body, size = await _read(_Request(content_length=len(BODY)), messages)
    assert body["messages"][0]["content"] == "hi"
    assert size == len(BODY)


async def test_a_body_without_a_length_is_read_to_its_last_message() -> None:
    messages = [
        {"type": "http.request", "body": BODY, "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]
    body, size = await _read(_Request(), messages)
    assert body["model"] == "gpt-test"
    assert size == len(BODY)


async def test_a_body_beyond_the_limit_is_still_refused() -> None:
    messages = [{"type": "http.request", "body": BODY, "more_body": True}]
    with pytest.raises(GatewayError) as refused:
        await _read(_Request(), messages, limit=10)
    assert refused.value.status_code == 413
