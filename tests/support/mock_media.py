"""The mock provider's images, moderation and speech endpoints (OpenAI's shapes), and a small valid WAV file."""

from __future__ import annotations

import base64
import io
import time
import wave
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tests.support.mock_upstream import MockUpstream

# A 1x1 transparent PNG: what the mock draws for every prompt.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def tiny_wav(seconds: float = 0.1, rate: int = 8000) -> bytes:
    """A valid mono 16-bit WAV of silence lasting `seconds`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


async def images(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """`n` images (b64_json, or a url when asked), or `images_returned` of them when the behaviour says so."""
    _, behavior, body, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    count = behavior.images_returned if behavior.images_returned is not None else int(body.get("n") or 1)
    if body.get("response_format") == "url":
        data = [{"url": f"https://images.example/{index}.png"} for index in range(count)]
    else:
        data = [{"b64_json": base64.b64encode(PIXEL_PNG).decode(), "revised_prompt": body["prompt"]}] * count
    return web.json_response({"created": int(time.time()), "data": data})


async def moderations(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """Flags an input that says "attack"; one result per input."""
    _, _, body, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    results = []
    for text in inputs:
        flagged = "attack" in str(text)
        results.append(
            {
                "flagged": flagged,
                "categories": {"violence": flagged, "harassment": False},
                "category_scores": {"violence": 0.9 if flagged else 0.01, "harassment": 0.01},
            }
        )
    return web.json_response({"id": "modr-mock", "model": body["model"], "results": results})


async def speech(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """A small WAV whatever the format asked (its content type says so)."""
    _, _, _, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    return web.Response(body=tiny_wav(), content_type="audio/wav")
