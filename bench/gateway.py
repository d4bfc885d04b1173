"""Gateway benchmark: Lyss, the mock provider alone, the Portkey gateway and the LiteLLM proxy, interleaved.

Run with `make bench` (or `python -m bench.gateway`; `BENCH_ROUNDS` rounds, 3 by default, of `BENCH_SECONDS`
per wrk run, 8 by default; `BENCH_PEERS=portkey` leaves LiteLLM out). Traffic goes to 127.0.0.1 only; every
wrk run is bounded in time. The provider is `bench.upstream` (a separate, fast process). Lyss runs with one
granian worker, embedded PostgreSQL and Redis, and everything on: key authentication, rate limits, quota
reservation and settlement, routing, usage logging. Each round measures every target, plain and streamed:
requests/s at 1, 16 and 64 connections, CPU per request over each (of the serving process tree; for Lyss
also of the Redis and PostgreSQL it uses), latency at a fixed 200 requests/s, and the time to the first
streamed event. The report gives medians over the rounds, Lyss's ratios to the others (per round, then the
median) and the load average, since the machine may be shared. A key whose budget is spent measures refused
calls (429, each written to the usage log like a served one). At the end the usage log must hold exactly one
row per request Lyss served and one per request it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from collections.abc import Callable, Iterator
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
from bench.foundation import LYSS as LYSS_COMMAND
from bench.foundation import ROOT, WRK_SECONDS, _free_port, _serve, _wrk, add_key, prepare_priced_tenant
from bench.litellm import LITELLM_VERSION, MASTER_KEY, litellm_proxy
from bench.portkey import HONO_NODE_SERVER_VERSION, PORTKEY_VERSION, portkey_gateway, portkey_headers

DATABASE = "lyss_gateway_bench"
CONNECTIONS = (1, 16, 64)
PACED_RATE = 200
PACED_CONNECTIONS = 8
WARM_UP_SECONDS = 2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# The gateways compared with Lyss; `BENCH_PEERS=portkey` skips LiteLLM, which takes a minute to start.
PEERS = tuple(name for name in os.environ.get("BENCH_PEERS", "portkey,litellm").split(",") if name)
# Another checkout of Lyss (e.g. `git archive <commit> | tar -x -C <dir>`) served next to this one, as
# "Lyss before", on the same database and Redis: a change measured side by side in one run.
BEFORE = os.environ.get("BENCH_LYSS_BEFORE")
FIRST_EVENT_SAMPLES = int(os.environ.get("BENCH_FIRST_EVENT_SAMPLES", "300"))
_MESSAGES = [{"role": "user", "content": "Say hello"}]
BODY = json.dumps({"model": "gpt-bench", "messages": _MESSAGES, "max_tokens": 16})
STREAM_BODY = json.dumps({"model": "gpt-bench", "messages": _MESSAGES, "max_tokens": 16, "stream": True})
ANSWERED_METRIC = 'lyss_http_request_duration_seconds_count{{method="POST",route="/v1/chat/completions",status="{}"}}'
MOCK, LYSS, LYSS_BEFORE, PORTKEY, LITELLM = "mock provider", "Lyss", "Lyss before", "Portkey", "LiteLLM"


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    # The serving process (its tree is counted), and for Lyss the Redis and PostgreSQL it waits on.
    pid: int | None = None
    backing: tuple[int, ...] = ()


@dataclass
class Run:
    """One target, streamed or not, in one round."""

    rps: dict[int, float]
    p50: dict[int, float]
    cpu_ms: dict[int, float | None]
    backing_ms: dict[int, float | None]
    paced: dict[str, float]
    resident_mb: float | None


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU of processes and all their children: for Lyss, `lyss serve`, its granian worker and
    its embedded job worker; for Portkey, node; for LiteLLM, its proxy and uvicorn's worker."""
    return sum(item.cpu_times().user + item.cpu_times().system for pid in pids for item in _tree(pid))


def _resident_mb(pid: int) -> float:
    return sum(item.memory_info().rss for item in _tree(pid)) / 2**20


def _measure(target: Target, body: str, *, refused: bool = False) -> Run:
    """Peak throughput at each connection count (CPU per request over each), then latency at a fixed rate.
    Every answer must be a 2xx, or with `refused`, none."""

    def check(figures: dict[str, float]) -> None:
        wrong = figures["requests"] - figures["non_2xx"] if refused else figures["non_2xx"]
        if wrong:
            raise SystemExit(f"{target.name}: {wrong:.0f} answers were {'2xx' if refused else 'not 2xx'}")

    own = (target.pid,) if target.pid else ()
    check(_wrk(target.url, 16, target.headers, post_json=body, seconds=WARM_UP_SECONDS))
    run = Run({}, {}, {}, {}, {}, None)
    for connections in CONNECTIONS:
        before, backing_before = _cpu_seconds(own), _cpu_seconds(target.backing)
        figures = _wrk(target.url, connections, target.headers, post_json=body)
        check(figures)
        if not figures["requests"]:
            raise SystemExit(f"{target.name}: no call completed in {WRK_SECONDS} s at {connections} connections")
        run.rps[connections], run.p50[connections] = figures["rps"], figures["p50"]
        run.cpu_ms[connections] = (_cpu_seconds(own) - before) * 1000 / figures["requests"] if own else None
        run.backing_ms[connections] = (
            (_cpu_seconds(target.backing) - backing_before) * 1000 / figures["requests"] if target.backing else None
        )
    run.paced = _wrk(target.url, PACED_CONNECTIONS, target.headers, post_json=body, rate=PACED_RATE)
    check(run.paced)
    run.resident_mb = _resident_mb(target.pid) if target.pid else None
    return run


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


def _postgres_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def _rounds(targets: list[Target]) -> tuple[dict[tuple[str, bool], list[Run]], dict[str, list[float]], list[str]]:
    """Every target, plain then streamed, in each round; the order turns by one each round so that no
    target always runs first (or last) in a round. Returns the runs, first-event times and load averages."""
    runs: dict[tuple[str, bool], list[Run]] = {}
    first_event: dict[str, list[float]] = {}
    loads = []
    for number in range(ROUNDS):
        shift = number % len(targets)
        for target in targets[shift:] + targets[:shift]:
            for streamed in (False, True):
                run = _measure(target, STREAM_BODY if streamed else BODY)
                runs.setdefault((target.name, streamed), []).append(run)
            first_event.setdefault(target.name, []).extend(_first_event_ms(target.url, target.headers))
        loads.append(_load())
        print(f"round {number + 1} of {ROUNDS} done, load average {loads[-1]}", file=sys.stderr, flush=True)
    return runs, first_event, loads


def _first_call(target: Target) -> None:
    """One call before the rounds, waited for: LiteLLM's first takes seconds, longer than wrk's timeout."""
    headers = {**target.headers, "Content-Type": "application/json"}
    response = httpx.post(target.url, content=BODY, headers=headers, timeout=120)
    if response.status_code != 200:
        raise SystemExit(f"{target.name}: the first call answered {response.status_code}: {response.text[:200]}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    load_before = _load()
    with contextlib.ExitStack() as stack:
        upstream_base = stack.enter_context(_upstream())
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lyss-gateway-bench-")))
        upstream_url = f"{upstream_base}/chat/completions"
        targets = [Target(MOCK, upstream_url, {})]

        postgres = EmbeddedPostgres(scratch / "postgres")
        redis_server = EmbeddedRedis(scratch / "redis")
        superuser_url = postgres.start()
        stack.callback(postgres.stop)
        redis_url = redis_server.start()
        stack.callback(redis_server.stop)
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
        }
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        lyss_url = f"{base_url}/v1/chat/completions"
        served = stack.enter_context(_serve(environment, port))
        # The usage log is written by a `lyss worker` of its own (not a child of the server, whose CPU is
        # counted), as in a deployment.
        worker = subprocess.Popen(
            [LYSS_COMMAND, "worker"],
            env={**environment, "PYTHONPATH": str(ROOT), "LYSS_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(worker.wait, 60)
        stack.callback(worker.terminate)
        backing = (_postgres_pid(postgres.pgdata), int(redis_server.pid_file.read_text()))
        targets.append(Target(LYSS, lyss_url, {"Authorization": f"Bearer {key}"}, served.pid, backing))
        before_url = None
        if BEFORE:
            before_port = _free_port()
            before_url = f"http://127.0.0.1:{before_port}"
            before = stack.enter_context(_serve(environment, before_port, Path(BEFORE)))
            auth = {"Authorization": f"Bearer {key}"}
            targets.append(Target(LYSS_BEFORE, f"{before_url}/v1/chat/completions", auth, before.pid, backing))
        if "portkey" in PEERS:
            portkey_url, portkey = stack.enter_context(portkey_gateway())
            targets.append(
                Target(PORTKEY, f"{portkey_url}/v1/chat/completions", portkey_headers(upstream_base), portkey.pid)
            )
        if "litellm" in PEERS:
            litellm_url, proxy = stack.enter_context(litellm_proxy(upstream_base))
            litellm_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            targets.append(Target(LITELLM, f"{litellm_url}/v1/chat/completions", litellm_headers, proxy.pid))

        for target in targets:
            _first_call(target)
        overhead = _self_reported_overhead(lyss_url, key)
        runs, first_event, loads = _rounds(targets)
        spent = Target("Lyss, refused (429)", lyss_url, {"Authorization": f"Bearer {spent_key}"}, served.pid, backing)
        refused = _measure(spent, BODY, refused=True)
        lyss_urls = [base_url] if before_url is None else [base_url, before_url]
        requests = sum(_answered(url, 200) for url in lyss_urls), sum(_answered(url, 429) for url in lyss_urls)
        usage_rows = asyncio.run(_usage_rows(superuser_url, sum(requests)))
        if (usage_rows.get("ok", 0), usage_rows.get("refused", 0)) != requests:
            raise SystemExit(
                f"the usage log holds {usage_rows} rows for {requests[0]} requests served and {requests[1]} refused"
            )
    _report(runs, refused, first_event, overhead, usage_rows, requests, (load_before, loads, _load()))


def _median(runs: list[Run], figure: Callable[[Run], float | None]) -> float | None:
    values = [value for run in runs if (value := figure(run)) is not None]
    return statistics.median(values) if values else None


def _peak(runs: list[Run], connections: int) -> float:
    return statistics.median(run.rps[connections] for run in runs)


def _shown(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _report(
    runs: dict[tuple[str, bool], list[Run]],
    refused: Run,
    first_event: dict[str, list[float]],
    overhead: tuple[float, float],
    usage_rows: dict[str, int],
    requests: tuple[int, int],
    loads: tuple[str, list[str], str],
) -> None:
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("model name")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    names = [name for name in (MOCK, LYSS, LYSS_BEFORE, PORTKEY, LITELLM) if (name, False) in runs]
    print(
        f"{datetime.date.today()} · {os.cpu_count()} CPUs ({cpu}) · Python {platform.python_version()} · "
        f"Lyss {commit} (granian {version('granian')}, one worker) · Portkey {PORTKEY_VERSION} (node "
        f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"@hono/node-server {HONO_NODE_SERVER_VERSION}) · LiteLLM {LITELLM_VERSION} (one worker) · "
        f"wrk -t1, {WRK_SECONDS} s per run, {PACED_RATE} req/s paced over {PACED_CONNECTIONS} connections · "
        f"medians of {ROUNDS} interleaved rounds"
    )
    print(f"load average (1, 5, 15 min): before {loads[0]}; after each round {' | '.join(loads[1])}; after {loads[2]}")
    print(
        "| target | req/s, 1 conn | 16 conns | 64 conns | p50 ms, 1 conn | added p50 ms, 1 conn "
        "| at 200 req/s: p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| CPU ms/request, 1 conn | 64 conns | Redis+PostgreSQL CPU ms/request, 1 conn | 64 conns | resident MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for streamed in (False, True):
        floor = runs[(MOCK, streamed)]
        for name in names:
            own = runs[(name, streamed)]
            p50_1 = _median(own, lambda run: run.p50[1])
            added_1 = _median(own, lambda run: run.p50[1]) - _median(floor, lambda run: run.p50[1])  # type: ignore[operator]
            paced_p50 = _median(own, lambda run: run.paced["p50"])
            paced_p99 = _median(own, lambda run: run.paced["p99"])
            added = (
                (None, None)
                if name == MOCK
                else (
                    paced_p50 - _median(floor, lambda run: run.paced["p50"]),  # type: ignore[operator]
                    paced_p99 - _median(floor, lambda run: run.paced["p99"]),  # type: ignore[operator]
                )
            )
            print(
                f"| {name}{', streamed' if streamed else ''} "
                + "".join(f"| {_shown(_peak(own, connections), 0)} " for connections in CONNECTIONS)
                + f"| {_shown(p50_1)} | {_shown(None if name == MOCK else added_1)} "
                f"| {_shown(paced_p50)} | {_shown(paced_p99)} | {_shown(added[0])} | {_shown(added[1])} "
                f"| {_shown(_median(own, lambda run: run.cpu_ms[1]))} "
                f"| {_shown(_median(own, lambda run: run.cpu_ms[64]))} "
                f"| {_shown(_median(own, lambda run: run.backing_ms[1]))} "
                f"| {_shown(_median(own, lambda run: run.backing_ms[64]))} "
                f"| {_shown(_median(own, lambda run: run.resident_mb), 0)} |"
            )
    print(
        f"Lyss, refused (429: a spent key), one run after the rounds: {refused.rps[1]:,.0f} / {refused.rps[16]:,.0f} / "
        f"{refused.rps[64]:,.0f} req/s at 1 / 16 / 64 connections, CPU {_shown(refused.cpu_ms[1])} / "
        f"{_shown(refused.cpu_ms[64])} ms per request at 1 / 64"
    )
    for peer in (LYSS_BEFORE, PORTKEY, LITELLM):
        if (peer, False) not in runs:
            continue
        for streamed in (False, True):
            ratios = []
            for connections in CONNECTIONS:
                # The ratio of each round, then their median: both gateways saw the same moment's load.
                pairs = zip(runs[(LYSS, streamed)], runs[(peer, streamed)], strict=True)
                ratios.append(
                    statistics.median(ours.rps[connections] / theirs.rps[connections] for ours, theirs in pairs)
                )
            print(
                f"Lyss / {peer}{', streamed' if streamed else ''}: "
                + ", ".join(f"{ratio:.2f}x at {c}" for ratio, c in zip(ratios, CONNECTIONS, strict=True))
                + " connections"
            )
    first_floor = statistics.median(first_event[MOCK])
    for name in names:
        p50, p99 = statistics.median(first_event[name]), _quantile(first_event[name], 99)
        print(
            f"time to first streamed event, {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            + ("" if name == MOCK else f" (added p50 {p50 - first_floor:.2f} ms)")
            + f", {len(first_event[name])} sequential requests on fresh connections"
        )
    print(f"x-lyss-overhead-ms over 300 sequential calls: p50 {overhead[0]:.2f} ms, p99 {overhead[1]:.2f} ms")
    print(
        f"usage log: {usage_rows.get('ok', 0)} rows for {requests[0]} requests Lyss served and "
        f"{usage_rows.get('refused', 0)} for {requests[1]} it refused (checked equal)"
    )


if __name__ == "__main__":
    main()
