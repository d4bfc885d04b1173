"""Gateway benchmark: Lyss, the provider alone and the LiteLLM proxy under the same load, in one run.

Run with `make bench` (or `python -m bench.gateway`). Traffic goes to 127.0.0.1 only; every wrk run is
bounded in time. The provider is `bench.upstream` (a separate, fast process). Lyss runs with one granian
worker, embedded PostgreSQL and Redis, and everything on: key authentication, rate limits, quota
reservation and settlement, routing, usage logging. For each target: the highest requests/s at 16 and 64
connections, latency at a fixed 200 requests/s, CPU per request and resident memory of the serving
process tree; for streams, the time to the first event. A key whose budget is spent measures refused calls
(429, each written to the usage log like a served one). After the Lyss runs the usage log must hold exactly
one row per request Lyss served and one per request it refused.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx
import psutil
from sqlalchemy import make_url

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.gateway.schemas import TokenCreate
from app.settings import new_key_entry
from bench.foundation import WRK_SECONDS, _free_port, _serve, _wrk, add_key, prepare_priced_tenant
from bench.litellm import LITELLM_VERSION, MASTER_KEY, litellm_proxy

DATABASE = "lyss_gateway_bench"
PEAK_CONNECTIONS = (16, 64)
PACED_RATE = 200
PACED_CONNECTIONS = 8
WARM_UP_SECONDS = 2
FIRST_EVENT_SAMPLES = 300
_MESSAGES = [{"role": "user", "content": "Say hello"}]
BODY = json.dumps({"model": "gpt-bench", "messages": _MESSAGES, "max_tokens": 16})
STREAM_BODY = json.dumps({"model": "gpt-bench", "messages": _MESSAGES, "max_tokens": 16, "stream": True})
ANSWERED_METRIC = 'lyss_http_request_duration_seconds_count{{method="POST",route="/v1/chat/completions",status="{}"}}'


@dataclass
class Row:
    target: str
    peak: dict[int, float]
    paced: dict[str, float]
    cpu_ms: float | None
    resident_mb: float | None


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (granian's workers, uvicorn's)."""
    return sum(item.cpu_times().user + item.cpu_times().system for item in _tree(pid))


def _resident_mb(pid: int) -> float:
    return sum(item.memory_info().rss for item in _tree(pid)) / 2**20


def _measure(
    target: str, url: str, headers: dict[str, str], body: str, pid: int | None, *, refused: bool = False
) -> Row:
    """Peak throughput at each connection count, then latency at a fixed rate; CPU over the peak runs.
    Every answer must be a 2xx, or with `refused`, none."""

    def check(figures: dict[str, float]) -> None:
        wrong = figures["requests"] - figures["non_2xx"] if refused else figures["non_2xx"]
        if wrong:
            raise SystemExit(f"{target}: {wrong:.0f} answers were {'2xx' if refused else 'not 2xx'}")

    check(_wrk(url, PEAK_CONNECTIONS[0], headers, post_json=body, seconds=WARM_UP_SECONDS))
    peak: dict[int, float] = {}
    served = cpu = 0.0
    for connections in PEAK_CONNECTIONS:
        before = _cpu_seconds(pid) if pid else 0.0
        figures = _wrk(url, connections, headers, post_json=body)
        check(figures)
        cpu += (_cpu_seconds(pid) - before) if pid else 0.0
        served += figures["requests"]
        peak[connections] = figures["rps"]
    paced = _wrk(url, PACED_CONNECTIONS, headers, post_json=body, rate=PACED_RATE)
    check(paced)
    return Row(
        target,
        peak,
        paced,
        cpu * 1000 / served if pid else None,
        _resident_mb(pid) if pid else None,
    )


def _first_event_ms(url: str, headers: dict[str, str], stream_body: str = STREAM_BODY) -> list[float]:
    """Milliseconds from sending a streamed request to the first `data:` bytes, over fresh connections."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    body = stream_body.encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST /{rest} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    samples = []
    for _ in range(FIRST_EVENT_SAMPLES):
        with socket.create_connection((address, int(port))) as connection:
            started = time.perf_counter()
            connection.sendall(request)
            received = b""
            while b"data:" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    raise SystemExit(f"{url}: the stream ended before its first event: {received[:200]!r}")
                received += chunk
            samples.append((time.perf_counter() - started) * 1000)
            while connection.recv(65536):
                pass
    return samples


def _self_reported_overhead(url: str, key: str, samples: int = 300) -> tuple[float, float]:
    """Lyss's own `x-lyss-overhead-ms` over sequential calls: p50 and p99 in milliseconds."""
    values = []
    with httpx.Client(timeout=10) as client:
        for _ in range(samples):
            response = client.post(
                url, content=BODY, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            )
            values.append(float(response.headers["x-lyss-overhead-ms"]))
    return statistics.median(values), statistics.quantiles(values, n=100)[98]


def _answered(base_url: str, status: int) -> int:
    """How many chat calls Lyss answered with `status`, by its own request histogram."""
    metric = ANSWERED_METRIC.format(status)
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(metric):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def _usage_rows(superuser_url: str, expected: int, timeout_seconds: float = 30) -> dict[str, int]:
    """Rows in the usage log by outcome, once the flusher has caught up (or the timeout passed)."""
    url = make_url(superuser_url).set(drivername="postgresql", database=DATABASE)
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            rows = await connection.fetch("SELECT outcome, count(*) FROM provider_usage_logs GROUP BY outcome")
            counts = {row[0]: int(row[1]) for row in rows}
            if sum(counts.values()) >= expected or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


@contextmanager
def _upstream() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        deadline = time.monotonic() + 30
        while True:  # the port is printed before granian listens on it
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the benchmark's provider did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/bench/v1"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # granian's worker process too
        process.wait()


def _quantile(samples: list[float], percent: int) -> float:
    return statistics.quantiles(samples, n=100)[percent - 1]


def main() -> None:
    rows: list[Row] = []
    first_event: dict[str, list[float]] = {}
    with _upstream() as upstream_base, tempfile.TemporaryDirectory(prefix="lyss-gateway-bench-") as scratch:
        upstream_url = f"{upstream_base}/chat/completions"
        rows.append(_measure("provider alone", upstream_url, {}, BODY, None))
        rows.append(_measure("provider alone, streamed", upstream_url, {}, STREAM_BODY, None))
        first_event["provider alone"] = _first_event_ms(upstream_url, {})

        postgres = EmbeddedPostgres(Path(scratch) / "postgres")
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        superuser_url = postgres.start()
        redis_url = redis_server.start()
        try:
            encryption_keys = new_key_entry()
            app_url, key, user = asyncio.run(
                prepare_priced_tenant(
                    superuser_url, DATABASE, upstream_base, encryption_keys, prices={"gpt-bench": (150_000, 600_000)}
                )
            )
            # A key whose budget is spent: every call is refused (429) after its plan and reservation script.
            spent_key = asyncio.run(add_key(app_url, user, TokenCreate(name="spent", quota=0)))
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
            lyss_url = f"{base_url}/v1/chat/completions"
            auth = {"Authorization": f"Bearer {key}"}
            with _serve(environment, port) as served:
                overhead = _self_reported_overhead(lyss_url, key)
                rows.append(_measure("Lyss", lyss_url, auth, BODY, served.pid))
                rows.append(_measure("Lyss, streamed", lyss_url, auth, STREAM_BODY, served.pid))
                first_event["Lyss"] = _first_event_ms(lyss_url, auth)
                spent = {"Authorization": f"Bearer {spent_key}"}
                rows.append(_measure("Lyss, refused (429)", lyss_url, spent, BODY, served.pid, refused=True))
                requests_served, requests_refused = _answered(base_url, 200), _answered(base_url, 429)
            usage_rows = asyncio.run(_usage_rows(superuser_url, requests_served + requests_refused))
        finally:
            redis_server.stop()
            postgres.stop()
        if (usage_rows.get("ok", 0), usage_rows.get("refused", 0)) != (requests_served, requests_refused):
            raise SystemExit(
                f"the usage log holds {usage_rows} rows for {requests_served} requests served "
                f"and {requests_refused} refused"
            )

        with litellm_proxy(upstream_base) as (litellm_url, proxy):
            litellm_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            litellm_chat = f"{litellm_url}/v1/chat/completions"
            rows.append(_measure("LiteLLM", litellm_chat, litellm_headers, BODY, proxy.pid))
            rows.append(_measure("LiteLLM, streamed", litellm_chat, litellm_headers, STREAM_BODY, proxy.pid))
            first_event["LiteLLM"] = _first_event_ms(litellm_chat, litellm_headers)

    _report(rows, first_event, overhead, usage_rows, (requests_served, requests_refused))


def _report(
    rows: list[Row],
    first_event: dict[str, list[float]],
    overhead: tuple[float, float],
    usage_rows: dict[str, int],
    requests: tuple[int, int],
) -> None:
    by_target = {row.target: row for row in rows}
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("model name")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.date.today()} · {os.cpu_count()} CPUs ({cpu}) · Python {platform.python_version()} · "
        f"Lyss {commit} (granian {version('granian')}, one worker) · LiteLLM {LITELLM_VERSION} (one worker) · "
        f"wrk -t1, {WRK_SECONDS} s per run, {PACED_RATE} req/s paced over {PACED_CONNECTIONS} connections"
    )
    print(
        "| target | req/s, 16 conns | req/s, 64 conns | at 200 req/s: served | p50 ms | p90 ms | p99 ms "
        "| added p50 ms | added p99 ms | CPU ms per request | resident MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        floor = by_target["provider alone, streamed" if "streamed" in row.target else "provider alone"]
        if "refused" in row.target:
            floor = row  # no provider is called: nothing to add to
        added = (
            ("—", "—")
            if row is floor
            else (f"{row.paced['p50'] - floor.paced['p50']:.2f}", f"{row.paced['p99'] - floor.paced['p99']:.2f}")
        )
        print(
            f"| {row.target} | {row.peak[16]:.0f} | {row.peak[64]:.0f} | {row.paced['rps']:.0f} "
            f"| {row.paced['p50']:.2f} | {row.paced['p90']:.2f} | {row.paced['p99']:.2f} | {added[0]} | {added[1]} "
            f"| {'—' if row.cpu_ms is None else f'{row.cpu_ms:.2f}'} "
            f"| {'—' if row.resident_mb is None else f'{row.resident_mb:.0f}'} |"
        )
    for connections in PEAK_CONNECTIONS:
        for suffix in ("", ", streamed"):
            ratio = by_target[f"Lyss{suffix}"].peak[connections] / by_target[f"LiteLLM{suffix}"].peak[connections]
            print(f"Lyss{suffix} / LiteLLM{suffix} at {connections} connections: {ratio:.1f}x")
    first_floor = statistics.median(first_event["provider alone"])
    for target in ("Lyss", "LiteLLM"):
        p50, p99 = statistics.median(first_event[target]), _quantile(first_event[target], 99)
        print(
            f"time to first streamed event, {target}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"(added p50 {p50 - first_floor:.2f}"
            f" ms; provider alone p50 {first_floor:.2f} ms), {FIRST_EVENT_SAMPLES} sequential requests"
        )
    print(f"x-lyss-overhead-ms over 300 sequential calls: p50 {overhead[0]:.2f} ms, p99 {overhead[1]:.2f} ms")
    print(
        f"usage log: {usage_rows.get('ok', 0)} rows for {requests[0]} requests Lyss served and "
        f"{usage_rows.get('refused', 0)} for {requests[1]} it refused (checked equal)"
    )


if __name__ == "__main__":
    main()
