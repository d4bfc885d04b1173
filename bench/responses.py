"""Responses API and response cache benchmark: what `/v1/responses` and a cache hit add to a call, in one run.

Run with `make bench` (or `python -m bench.responses`). Traffic goes to 127.0.0.1 only; every wrk run is
bounded in time. The provider is `bench.upstream`, which serves both `/chat/completions` and `/responses`.
Lyss runs with one granian worker, embedded PostgreSQL and Redis, and the whole hot path on (key
authentication, rate limits, reservation and settlement, usage log). Measured side by side:

- `POST /v1/responses` to an `openai`-type channel, which is sent the client's own Responses request
  (native), with `store: false` and with the default `store: true` (each answer kept in PostgreSQL);
- `POST /v1/responses` to an OpenAI-compatible chat-only channel (translated to Chat Completions and back);
- `POST /v1/chat/completions` with the response cache off for the key, and the same call answered from
  the cache (`temperature: 0`, the organization's cache on): no provider call at all;
- the provider alone, for each of its two endpoints;

each at its peak over 16 connections and at a paced 200 requests/s, and the streams' time to the first event.
After the runs the usage log must hold one row per answer Lyss gave (the cache hits included).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import make_url

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.admin import encrypt_keys, provider_type
from app.gateway.schemas import TokenCreate
from app.settings import new_key_entry, parse_keyring
from bench.foundation import WRK_SECONDS, _free_port, _serve, _wrk, add_key, prepare_priced_tenant
from bench.gateway import WARM_UP_SECONDS, _first_event_ms, _upstream
from db.auth import User
from db.provider import Channel
from db.session import create_engine, create_session_maker, tenant_session

DATABASE = "lyss_responses_bench"
PEAK_CONNECTIONS = 16
PACED_RATE = 200
PACED_CONNECTIONS = 8
NATIVE_MODEL = "gpt-bench-native"
TRANSLATED_MODEL = "gpt-bench"
PRICES = {TRANSLATED_MODEL: (150_000, 600_000), NATIVE_MODEL: (150_000, 600_000)}
CACHE_SETTINGS = {"response_cache": {"enabled": True, "ttl_seconds": 3600}}
_MESSAGES = [{"role": "user", "content": "Say hello"}]


def _responses_body(model: str, **extra: object) -> str:
    return json.dumps({"model": model, "input": "Say hello", "max_output_tokens": 16, **extra})


CHAT_BODY = json.dumps({"model": TRANSLATED_MODEL, "messages": _MESSAGES, "max_tokens": 16, "temperature": 0})


@dataclass
class Row:
    target: str
    floor: str
    peak: float
    paced: dict[str, float]


def _measure(target: str, floor: str, url: str, headers: dict[str, str], body: str) -> Row:
    """Peak requests/s over 16 connections, then latency at a paced 200 requests/s; every answer a 2xx."""
    runs = [
        _wrk(url, PEAK_CONNECTIONS, headers, post_json=body, seconds=WARM_UP_SECONDS),
        peak := _wrk(url, PEAK_CONNECTIONS, headers, post_json=body),
        paced := _wrk(url, PACED_CONNECTIONS, headers, post_json=body, rate=PACED_RATE),
    ]
    if wrong := sum(run["non_2xx"] for run in runs):
        raise SystemExit(f"{target}: {wrong:.0f} answers were not 2xx")
    return Row(target, floor, peak["rps"], paced)


async def _add_channel(app_url: str, encryption_keys: str, user: User, upstream_base: str) -> None:
    """An `openai`-type channel (whose provider serves the Responses API) for the native model."""
    engine = create_engine(app_url, pool_size=1)
    box = SecretBox(parse_keyring(encryption_keys, "LYSS_ENCRYPTION_KEYS"))
    async with tenant_session(create_session_maker(engine), user.tenant_id) as session:
        kind = await provider_type(session, "openai", echo_enabled=False)
        session.add(
            Channel(
                tenant_id=user.tenant_id,
                name="bench-native",
                type_id=kind.id,
                base_url=upstream_base,
                encrypted_keys=encrypt_keys(box, user.tenant_id, ["bench-key"]),
                models=[NATIVE_MODEL],
            )
        )
        await session.commit()
    await engine.dispose()


def _answers(base_url: str) -> int:
    """How many 200 answers Lyss gave on the two measured routes, by its own request histogram."""
    routes = ('route="/v1/chat/completions"', 'route="/v1/responses"')
    total = 0
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        counted = line.startswith("lyss_http_request_duration_seconds_count{") and 'status="200"' in line
        if counted and any(route in line for route in routes):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def _usage_rows(superuser_url: str, expected: int, timeout_seconds: float = 30) -> dict[str, int]:
    url = make_url(superuser_url).set(drivername="postgresql", database=DATABASE)
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            rows = await connection.fetch("SELECT outcome, count(*) FROM provider_usage_logs GROUP BY outcome")
            counts = {row[0]: int(row[1]) for row in rows}
            if sum(counts.values()) >= expected or asyncio.get_running_loop().time() > deadline:
                return counts
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


def main() -> None:
    rows: list[Row] = []
    first_event: dict[str, list[float]] = {}
    with _upstream() as upstream_base, tempfile.TemporaryDirectory(prefix="lyss-responses-bench-") as scratch:
        native_stream = _responses_body(NATIVE_MODEL, stream=True)
        rows.append(_measure("provider alone, /responses", "", f"{upstream_base}/responses", {}, _responses_body("m")))
        rows.append(
            _measure("provider alone, /chat/completions", "", f"{upstream_base}/chat/completions", {}, CHAT_BODY)
        )
        first_event["provider alone, /responses"] = _first_event_ms(f"{upstream_base}/responses", {}, native_stream)

        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            encryption_keys = new_key_entry()
            app_url, key, user = asyncio.run(
                prepare_priced_tenant(
                    superuser_url, DATABASE, upstream_base, encryption_keys, prices=PRICES, settings=CACHE_SETTINGS
                )
            )
            asyncio.run(_add_channel(app_url, encryption_keys, user, upstream_base))
            uncached_key = asyncio.run(
                add_key(
                    app_url,
                    user,
                    TokenCreate(
                        name="uncached", quota=10**15, rpm_limit=10**9, tpm_limit=2 * 10**9, response_cache="off"
                    ),
                )
            )
            environment = {
                "PATH": os.environ["PATH"],
                "DATABASE_URL": app_url,
                "REDIS_URL": redis_url,
                "LYSS_ENCRYPTION_KEYS": encryption_keys,
                "LYSS_JWT_KEYS": new_key_entry(),
                "LYSS_WORKERS": "1",
                # The usage log is written by the job worker (in a deployment, `lyss worker`).
                "LYSS_EMBEDDED_WORKER": "true",
            }
            port = _free_port()
            base_url = f"http://127.0.0.1:{port}"
            responses_url, chat_url = f"{base_url}/v1/responses", f"{base_url}/v1/chat/completions"
            cached, uncached = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {uncached_key}"}
            provider_responses, provider_chat = "provider alone, /responses", "provider alone, /chat/completions"
            with _serve(environment, port):
                for target, model, extra in (
                    ("Lyss /v1/responses, native, store false", NATIVE_MODEL, {"store": False}),
                    ("Lyss /v1/responses, native, stored", NATIVE_MODEL, {}),
                    ("Lyss /v1/responses, translated to chat", TRANSLATED_MODEL, {"store": False}),
                ):
                    floor = provider_responses if model == NATIVE_MODEL else provider_chat
                    rows.append(_measure(target, floor, responses_url, uncached, _responses_body(model, **extra)))
                rows.append(
                    _measure("Lyss /v1/chat/completions, cache off", provider_chat, chat_url, uncached, CHAT_BODY)
                )
                rows.append(
                    _measure("Lyss /v1/chat/completions, cache hit", provider_chat, chat_url, cached, CHAT_BODY)
                )
                first_event["Lyss /v1/responses, native"] = _first_event_ms(responses_url, uncached, native_stream)
                first_event["Lyss /v1/responses, translated"] = _first_event_ms(
                    responses_url, uncached, _responses_body(TRANSLATED_MODEL, stream=True, store=False)
                )
                answers = _answers(base_url)
            usage_rows = asyncio.run(_usage_rows(superuser_url, answers))
        finally:
            redis_server.stop()
            postgres.stop()
    if sum(usage_rows.values()) != answers:
        raise SystemExit(f"the usage log holds {usage_rows} rows for {answers} answers")
    _report(rows, first_event, usage_rows, answers)


def _report(rows: list[Row], first_event: dict[str, list[float]], usage_rows: dict[str, int], answers: int) -> None:
    by_target = {row.target: row for row in rows}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.date.today()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · Lyss {commit} "
        f"(one worker) · wrk -t1, {WRK_SECONDS} s per run, {PEAK_CONNECTIONS} connections at peak, "
        f"{PACED_RATE} req/s paced over {PACED_CONNECTIONS} connections · load average "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}"
    )
    print("| target | req/s, 16 conns | at 200 req/s: p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        floor = by_target.get(row.floor)
        added = (
            ("—", "—")
            if floor is None
            else (f"{row.paced['p50'] - floor.paced['p50']:.2f}", f"{row.paced['p99'] - floor.paced['p99']:.2f}")
        )
        print(
            f"| {row.target} | {row.peak:.0f} | {row.paced['p50']:.2f} | {row.paced['p99']:.2f} "
            f"| {added[0]} | {added[1]} |"
        )
    print("\n| stream | first event p50 ms | p90 ms |")
    print("|---|---:|---:|")
    for target, samples in first_event.items():
        print(f"| {target} | {statistics.median(samples):.2f} | {statistics.quantiles(samples, n=10)[8]:.2f} |")
    print(f"\nusage log: {usage_rows} for {answers} answers")


if __name__ == "__main__":
    main()
