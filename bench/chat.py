"""Chat benchmark: how long after the provider's first token the chat page's first streamed token arrives.

Run with `make bench` (or `python -m bench.chat`). Traffic goes to 127.0.0.1 only, in a bounded number of
turns. The provider is a mock in this process, so the moment it writes its first content chunk and the
moment the client reads the first token back from Lyss are taken on one clock (`time.perf_counter_ns`).
A chat turn is what the portal's chat page sends: `POST /api/conversations/{id}/messages` with
`"stream": true` (here with a Bearer access token instead of the session cookie and CSRF header), which
stores the message, searches memories (an embedding model is set, so the query is embedded through the
gateway), builds the context and streams through the gateway in process. The same measurement through
`/v1/chat/completions` (the gateway alone) and straight to the provider (the floor of the measurement)
shows what the chat layer itself adds.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.settings import new_key_entry, parse_keyring
from bench.foundation import _free_port, _serve, prepare_priced_tenant

DATABASE = "lyss_chat_bench"
MODEL = "gpt-bench"
EMBEDDING_MODEL = "embed-bench"
EMBEDDING_DIMENSIONS = 1536
# The provider answers its headers at once, its first content chunk after FIRST_TOKEN_MS, then one chunk
# every BETWEEN_TOKENS_MS: a model that thinks a little, then types.
FIRST_TOKEN_MS = 20
BETWEEN_TOKENS_MS = 5
TOKENS = 8
# The first token's text: unique in the stream, so the client finds it whatever wraps it.
FIRST_TOKEN = "tok0"
SEQUENTIAL_TURNS = 200
CONCURRENCY = 8
CONCURRENT_TURNS = 200
WARM_UP_TURNS = 20
# A conversation keeps its last 40 messages in context: new ones every 10 turns keep the context small and alike.
TURNS_PER_CONVERSATION = 10
TURN_TIMEOUT_SECONDS = 30


class MockProvider:
    """An OpenAI-compatible provider on loopback (HTTP/1.1, keep-alive) that notes when each stream's first
    content chunk goes out, under the tag the request's last message carries."""

    def __init__(self) -> None:
        self.first_token_ns: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in header_lines if line)
                }
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                path = request_line.split(" ")[1]
                if path.endswith("/embeddings"):
                    await self._embeddings(writer, body)
                elif path.endswith("/chat/completions") and body.get("stream"):
                    await self._stream(writer, body)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _embeddings(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vector = [1.0 / EMBEDDING_DIMENSIONS**0.5] * EMBEDDING_DIMENSIONS
        answer = json.dumps(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))],
                "model": body["model"],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        tag = str(body["messages"][-1]["content"]).rsplit("#", 1)[-1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(FIRST_TOKEN_MS / 1000)
        for index in range(TOKENS):
            delta = {"role": "assistant", "content": FIRST_TOKEN} if index == 0 else {"content": f" tok{index}"}
            self._event(writer, _chunk(delta))
            if index == 0:
                # The transport hands the bytes to the kernel in write() when its buffer is empty, as here.
                self.first_token_ns[tag] = time.perf_counter_ns()
            await writer.drain()
            await asyncio.sleep(BETWEEN_TOKENS_MS / 1000)
        self._event(writer, _chunk({}, "stop"))
        usage = {"prompt_tokens": 20, "completion_tokens": TOKENS, "total_tokens": 20 + TOKENS}
        self._event(writer, {**_chunk({}), "choices": [], "usage": usage})
        data = b"data: [DONE]\n\n"
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def _event(writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


@dataclass
class Samples:
    # Provider's first content chunk written -> first token read by the client.
    added_ms: list[float] = field(default_factory=list)
    # Request sent -> first token read by the client.
    first_token_ms: list[float] = field(default_factory=list)


async def _turn(
    provider: MockProvider, port: int, path: str, headers: dict[str, str], body: dict[str, Any], tag: str
) -> tuple[float, float]:
    """One streamed request over a fresh connection, read to its end: (added ms, request-to-first-token ms)."""
    encoded = json.dumps(body).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(encoded)}\r\nConnection: close\r\n\r\n"
    ).encode() + encoded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = time.perf_counter_ns()
        writer.write(request)
        received = b""
        while FIRST_TOKEN.encode() not in received:
            chunk = await reader.read(65536)
            if not chunk:
                raise SystemExit(f"{path}: the stream ended before its first token: {received[:300]!r}")
            received += chunk
        arrived = time.perf_counter_ns()
        while chunk := await reader.read(65536):
            received += chunk
    finally:
        writer.close()
    if not received.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{path}: {received[:300]!r}")
    ending = b"event: done" if "/messages" in path else b"data: [DONE]"
    if ending not in received:
        raise SystemExit(f"{path}: the stream did not end well: {received[-300:]!r}")
    return (arrived - provider.first_token_ns.pop(tag)) / 1e6, (arrived - sent) / 1e6


# (client number, tag) -> (added ms, request-to-first-token ms)
Turn = Callable[[int, str], Awaitable[tuple[float, float]]]


async def _run(turn: Turn, turns: int, concurrency: int, label: str) -> Samples:
    samples = Samples()
    remaining = iter(range(turns))

    async def client(number: int) -> None:
        for index in remaining:
            added, first = await asyncio.wait_for(turn(number, f"{label}-{number}-{index}"), TURN_TIMEOUT_SECONDS)
            samples.added_ms.append(added)
            samples.first_token_ms.append(first)

    await asyncio.gather(*(client(number) for number in range(concurrency)))
    return samples


def _conversations(base_url: str, token: str, count: int) -> list[UUID]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        created = []
        for _ in range(count):
            response = client.post("/api/conversations", json={"model": MODEL, "max_tokens": 64})
            response.raise_for_status()
            created.append(UUID(response.json()["id"]))
    return created


async def _measure(provider: MockProvider, port: int, token: str, key: str) -> dict[str, dict[str, Samples]]:
    base_url = f"http://127.0.0.1:{port}"
    needed = (WARM_UP_TURNS + SEQUENTIAL_TURNS + CONCURRENT_TURNS) // TURNS_PER_CONVERSATION + 2 * CONCURRENCY
    conversations = iter(await asyncio.to_thread(_conversations, base_url, token, needed))
    # Each client talks in a conversation of its own (the provider finds the tag in the last message).
    current: dict[int, tuple[UUID, int]] = {}
    bearer = {"Authorization": f"Bearer {token}"}

    async def chat(client: int, tag: str) -> tuple[float, float]:
        conversation, turns = current.get(client) or (next(conversations), 0)
        if turns >= TURNS_PER_CONVERSATION:
            conversation, turns = next(conversations), 0
        current[client] = (conversation, turns + 1)
        body = {"content": f"Tell me something about the weather #{tag}", "stream": True}
        return await _turn(provider, port, f"/api/conversations/{conversation}/messages", bearer, body, tag)

    async def gateway(_client: int, tag: str) -> tuple[float, float]:
        messages = [{"role": "user", "content": f"Tell me something about the weather #{tag}"}]
        body = {"model": MODEL, "messages": messages, "max_tokens": 64, "stream": True}
        return await _turn(provider, port, "/v1/chat/completions", {"Authorization": f"Bearer {key}"}, body, tag)

    async def direct(_client: int, tag: str) -> tuple[float, float]:
        messages = [{"role": "user", "content": f"Tell me something about the weather #{tag}"}]
        body = {"model": MODEL, "messages": messages, "stream": True}
        return await _turn(provider, provider.port, "/v1/chat/completions", {}, body, tag)

    results: dict[str, dict[str, Samples]] = {}
    for target, turn in (("provider alone", direct), ("/v1/chat/completions", gateway), ("chat page API", chat)):
        await _run(turn, WARM_UP_TURNS, 1, f"{target}-warm")
        results[target] = {
            "sequential": await _run(turn, SEQUENTIAL_TURNS, 1, f"{target}-seq"),
            f"{CONCURRENCY} concurrent": await _run(turn, CONCURRENT_TURNS, CONCURRENCY, f"{target}-con"),
        }
    return results


async def _bench(superuser_url: str, redis_url: str) -> tuple[dict[str, dict[str, Samples]], tuple[float, ...]]:
    provider = MockProvider()
    await provider.start()
    try:
        encryption_keys = new_key_entry()
        app_url, key, user = await prepare_priced_tenant(
            superuser_url,
            DATABASE,
            f"http://127.0.0.1:{provider.port}/v1",
            encryption_keys,
            prices={MODEL: (150_000, 600_000), EMBEDDING_MODEL: (20_000, 0)},
            # Memory on, with an embedding model and no extraction model: each turn embeds its message and
            # searches, and no extraction job follows it.
            settings={"memory": {"enabled": True, "embedding_model": EMBEDDING_MODEL}},
        )
        jwt_keys = new_key_entry()
        token = issue_access_token(
            parse_keyring(jwt_keys, "LYSS_JWT_KEYS"),
            Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7()),
            ttl_seconds=3600,
        )
        environment = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": app_url,
            "REDIS_URL": redis_url,
            "LYSS_ENCRYPTION_KEYS": encryption_keys,
            "LYSS_JWT_KEYS": jwt_keys,
            "LYSS_WORKERS": "1",
        }
        port = _free_port()
        # `_serve` waits for the server synchronously; the provider must keep answering meanwhile (it is not
        # called before the first turn, but the loop stays free anyway).
        served = _serve(environment, port)
        await asyncio.to_thread(served.__enter__)
        try:
            results = await _measure(provider, port, token, key)
            load = os.getloadavg()
        finally:
            await asyncio.to_thread(served.__exit__, None, None, None)
    finally:
        await provider.stop()
    return results, load


def _quantile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _figures(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.2f} | {_quantile(values, 90):.2f} | {_quantile(values, 99):.2f} | "
        f"{max(values):.2f}"
    )


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lyss-chat-bench-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            results, load_after = asyncio.run(_bench(superuser_url, redis_url))
        finally:
            redis_server.stop()
            postgres.stop()
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("model name")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs ({cpu}) · Lyss {commit} "
        f"(one granian worker, embedded PostgreSQL and Redis) · load average before "
        f"{' '.join(f'{value:.2f}' for value in load_before)}, after {' '.join(f'{value:.2f}' for value in load_after)}"
    )
    print(
        f"provider: first content chunk {FIRST_TOKEN_MS} ms after its headers, then one every {BETWEEN_TOKENS_MS} ms "
        f"({TOKENS} in all); every request on a fresh client connection, read to its end"
    )
    print(
        "| path | run | turns | added first-token ms p50 | p90 | p99 | max "
        "| request to first token ms p50 | p90 | p99 | max |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target, runs in results.items():
        for run, samples in runs.items():
            print(
                f"| {target} | {run} | {len(samples.added_ms)} | {_figures(samples.added_ms)} "
                f"| {_figures(samples.first_token_ms)} |"
            )


if __name__ == "__main__":
    main()
