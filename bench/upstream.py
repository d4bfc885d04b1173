"""The benchmark's provider: a fast OpenAI-compatible chat endpoint on loopback (granian, RSGI, one worker).

Run with `python -m bench.upstream`: it prints its port on the first line, then serves until killed.
Answers `POST …/chat/completions` with a fixed completion (with usage), or, when the body asks for
`"stream": true`, with five content chunks, a usage chunk and `[DONE]`; `POST …/responses` likewise with a
fixed Responses API answer, or its event stream (`response.created`, five text deltas, `response.completed`);
`POST …/embeddings` with `hashed_vector`s of the inputs.
It does nearly nothing per call so that what the gateway benchmark measures is the gateway. The test suite's
scriptable mock (`tests.support.mock_upstream`) is the one to use for behaviour; this one is for speed.
"""

from __future__ import annotations

import socket
import sys
import zlib
from typing import Any

import msgspec
import numpy as np

COMPLETION = msgspec.json.encode(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-bench",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "w0 w1 w2 w3 w4"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }
)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


_STREAM_EVENTS = [
    _chunk({"role": "assistant", "content": "w0"}),
    *(_chunk({"content": f" w{index}"}) for index in range(1, 5)),
    _chunk({}, "stop"),
    {**_chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}},
]
STREAM = b"".join(b"data: " + msgspec.json.encode(event) + b"\n\n" for event in _STREAM_EVENTS) + b"data: [DONE]\n\n"
_USAGE = {
    "input_tokens": 9,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 14,
}
_MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_bench",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "w0 w1 w2 w3 w4", "annotations": []}],
}
_RESPONSE = {
    "id": "resp_bench",
    "object": "response",
    "created_at": 1_700_000_000,
    "status": "completed",
    "model": "gpt-bench",
    "output": [_MESSAGE_ITEM],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": _USAGE,
}
RESPONSE = msgspec.json.encode(_RESPONSE)
_RESPONSE_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "response": {**_RESPONSE, "status": "in_progress", "output": [], "usage": None}},
    *(
        {
            "type": "response.output_text.delta",
            "item_id": "msg_bench",
            "output_index": 0,
            "content_index": 0,
            "delta": f"{' ' if index else ''}w{index}",
        }
        for index in range(5)
    ),
    {"type": "response.completed", "response": _RESPONSE},
]
RESPONSE_STREAM = b"".join(
    b"event: "
    + event["type"].encode()
    + b"\ndata: "
    + msgspec.json.encode({**event, "sequence_number": number})
    + b"\n\n"
    for number, event in enumerate(_RESPONSE_EVENTS)
)
JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


class _StreamFlag(msgspec.Struct):
    stream: bool = False


_decode_flag = msgspec.json.Decoder(_StreamFlag)

# The embeddings' size: all-MiniLM-L6-v2's, so that the knowledge benchmark's bases use the same HNSW index.
EMBEDDING_DIMENSIONS = 384


class _EmbeddingsBody(msgspec.Struct):
    input: str | list[str]
    model: str = "bench-hash"


_decode_embeddings = msgspec.json.Decoder(_EmbeddingsBody)


def hashed_vector(text: str) -> list[float]:
    """A deterministic unit vector: each word adds one in a position its CRC picks, so texts sharing words are
    near each other (a bag of words, not a model) and computing it costs next to nothing."""
    vector = np.zeros(EMBEDDING_DIMENSIONS, dtype=np.float32)
    for word in text.lower().split():
        vector[zlib.crc32(word.encode()) % EMBEDDING_DIMENSIONS] += 1.0
    norm = float(np.linalg.norm(vector))
    vector = vector / norm if norm else np.full(EMBEDDING_DIMENSIONS, EMBEDDING_DIMENSIONS**-0.5, dtype=np.float32)
    return [float(value) for value in vector]


def _embeddings(body: bytes) -> bytes:
    request = _decode_embeddings.decode(body)
    texts = [request.input] if isinstance(request.input, str) else request.input
    tokens = sum(len(text.split()) for text in texts)
    return msgspec.json.encode(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": hashed_vector(text)}
                for index, text in enumerate(texts)
            ],
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def app(scope: Any, protocol: Any) -> None:
    """RSGI: the whole stream goes in one write, as a provider with the answer ready would send it."""
    body = await protocol()
    if scope.method == "POST" and scope.path.endswith("/embeddings"):
        protocol.response_bytes(200, JSON_HEADERS, _embeddings(body))
        return
    if scope.method != "POST" or not scope.path.endswith(("/chat/completions", "/responses")):
        protocol.response_bytes(404, JSON_HEADERS, b'{"error": {"message": "not found"}}')
        return
    responses = scope.path.endswith("/responses")
    if _decode_flag.decode(body).stream:
        transport = protocol.response_stream(200, SSE_HEADERS)
        await transport.send_bytes(RESPONSE_STREAM if responses else STREAM)
        return
    protocol.response_bytes(200, JSON_HEADERS, RESPONSE if responses else COMPLETION)


def main() -> None:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    print(port, flush=True)
    sys.stdout.close()
    Server(
        "bench.upstream:app",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI,
        workers=1,
        loop=Loops.uvloop,
        log_enabled=False,
    ).serve()


if __name__ == "__main__":
    main()
