"""Foundation benchmark: start-up times of `lyss serve`, and wrk against the foundation's endpoints.

Run with `make bench`. Traffic goes to 127.0.0.1 only, each wrk run is bounded to a few seconds.
Needs wrk (Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from argon2 import PasswordHasher
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.admin import create_token, encrypt_keys, provider_type
from app.gateway.schemas import TokenCreate
from app.settings import new_key_entry, parse_keyring
from app.tenants.services import Actor
from db.auth import User
from db.bootstrap import DatabaseUrls, bootstrap_database
from db.migrations import upgrade_to_head
from db.provider import Channel, ModelPrice
from db.session import create_engine, create_session_maker, tenant_session
from db.tenant import Organization

LYSS = str(Path(sys.executable).parent / "lyss")
ROOT = Path(__file__).resolve().parent.parent
WRK_SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = (1, 16, 64)
LOGIN_CONNECTIONS = (1, 4)
BENCH_TENANT = "bench"
BENCH_EMAIL = "bench@bench.example.com"
BENCH_PASSWORD = "a bench passphrase"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit("lyss serve exited before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit("lyss serve was not ready in time")


class Served(NamedTuple):
    ready_seconds: float
    pid: int


@contextmanager
def _serve(environment: dict[str, str], port: int, root: Path = ROOT) -> Iterator[Served]:
    process = subprocess.Popen(
        [LYSS, "serve"],
        # The venv's `lyss` imports the checkout it was installed from; PYTHONPATH makes it serve `root`.
        env={**environment, "PYTHONPATH": str(root), "LYSS_PORT": str(port), "LYSS_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield Served(_wait_ready(process, port), process.pid)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)


def measure_startup(scratch: Path) -> tuple[float, float]:
    """Seconds from `lyss serve` to /readyz 200: on an empty data directory, then on the same one."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LYSS_DATA_DIR": str(scratch)}
    port = _free_port()
    with _serve(environment, port) as cold:
        pass
    with _serve(environment, port) as warm:
        pass
    return cold.ready_seconds, warm.ready_seconds


async def _prepare_database(superuser_url: str) -> tuple[DatabaseUrls, User]:
    urls = await bootstrap_database(superuser_url, "lyss_bench")
    await upgrade_to_head(urls.owner_url)
    engine = create_engine(urls.app_url, pool_size=1)
    tenant_id = uuid7()
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        session.add(Organization(id=tenant_id, slug=BENCH_TENANT, name="Bench"))
        await session.flush()
        user = User(email=BENCH_EMAIL, hashed_password=PasswordHasher().hash(BENCH_PASSWORD))
        session.add(user)
        await session.commit()
    await engine.dispose()
    return urls, user


# wrk's `delay()` hook, called before each request after a connection's first: spaces the requests of all
# connections `interval` ms apart on a monotonic clock (LuaJIT's ffi), so the offered load is a fixed rate.
_PACING = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lyss_timespec;
int clock_gettime(int clock, lyss_timespec *now);
]]
local now = ffi.new("lyss_timespec")
local interval = %f
local next_at = nil
function delay()
    ffi.C.clock_gettime(1, now)
    local at = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
    if next_at == nil or next_at < at then next_at = at end
    local wait = next_at - at
    next_at = next_at + interval
    return wait
end
"""


def _wrk(
    url: str,
    connections: int,
    headers: dict[str, str],
    post_json: str | None = None,
    rate: int | None = None,
    seconds: int = WRK_SECONDS,
) -> dict[str, float]:
    """One bounded wrk run: requests/s, p50/p90/p99 ms, completed requests, non-2xx; `rate` paces it."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        command[1:1] = ["-H", f"{name}: {value}"]
    script = ""
    if post_json is not None:
        script += f'wrk.method = "POST"\nwrk.body = [[{post_json}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    if rate is not None:
        script += _PACING % (1000 / rate)
    if script:
        path = Path(tempfile.mkstemp(suffix=".lua")[1])
        path.write_text(script)
        command[1:1] = ["-s", str(path)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    figures["requests"] = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    for percentile in ("50", "90", "99"):
        value, unit = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        figures[f"p{percentile}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def measure_requests(scratch: Path) -> list[tuple[str, int, dict[str, float]]]:
    postgres = EmbeddedPostgres(scratch / "postgres")
    redis_server = EmbeddedRedis(scratch / "redis")
    superuser_url = postgres.start()
    redis_url = redis_server.start()
    try:
        urls, user = asyncio.run(_prepare_database(superuser_url))
        jwt_keys = new_key_entry()
        token = issue_access_token(
            parse_keyring(jwt_keys, "LYSS_JWT_KEYS"),
            Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7()),
            ttl_seconds=3600,
        )
        environment = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": urls.app_url,
            "REDIS_URL": redis_url,
            "LYSS_ENCRYPTION_KEYS": new_key_entry(),
            "LYSS_JWT_KEYS": jwt_keys,
            "LYSS_WORKERS": "1",
            "LYSS_LOGIN_IP_LIMIT_PER_MINUTE": "1000000",
        }
        port = _free_port()
        results = []
        with _serve(environment, port):
            for path, headers in (("/healthz", {}), ("/api/me", {"Authorization": f"Bearer {token}"})):
                for connections in CONNECTIONS:
                    figures = _wrk(f"http://127.0.0.1:{port}{path}", connections, headers)
                    if figures["non_2xx"]:
                        raise SystemExit(f"{path} answered {figures['non_2xx']:.0f} non-2xx responses")
                    results.append((path, connections, figures))
            login = json.dumps({"tenant": BENCH_TENANT, "email": BENCH_EMAIL, "password": BENCH_PASSWORD})
            for connections in LOGIN_CONNECTIONS:
                figures = _wrk(f"http://127.0.0.1:{port}/api/auth/login", connections, {}, post_json=login)
                if figures["non_2xx"]:
                    raise SystemExit(f"login answered {figures['non_2xx']:.0f} non-2xx responses")
                results.append(("POST /api/auth/login", connections, figures))
        return results
    finally:
        redis_server.stop()
        postgres.stop()


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="lyss-bench-") as scratch:
        cold, warm = measure_startup(Path(scratch) / "startup")
        results = measure_requests(Path(scratch) / "requests")
    print(f"lyss serve to /readyz 200: empty data dir {cold:.2f} s, existing data dir {warm:.2f} s")
    print(f"wrk -t1, {WRK_SECONDS} s per row, one granian worker, embedded PostgreSQL 18 and Redis")
    print("| endpoint | connections | requests/s | p50 ms | p90 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, connections, figures in results:
        print(
            f"| {path} | {connections} | {figures['rps']:.0f} | {figures['p50']:.2f} | "
            f"{figures['p90']:.2f} | {figures['p99']:.2f} |"
        )


if __name__ == "__main__":
    main()


async def prepare_priced_tenant(
    superuser_url: str,
    database: str,
    upstream_base: str,
    encryption_keys: str,
    *,
    prices: dict[str, tuple[int, int]],
    settings: dict[str, Any] | None = None,
) -> tuple[str, str, User]:
    """A benchmark's database: a tenant (with `settings`), a user, a channel to the mock provider at
    `upstream_base` serving each model of `prices` (prompt, completion credits per million tokens), and a key of
    that user never refused: a quota far above what a run spends and rate limits far above its rate, so that
    the reservation, the limit checks and the settlement all run. Returns the app role's URL, the key and the user.
    """
    urls = await bootstrap_database(superuser_url, database)
    await upgrade_to_head(urls.owner_url)
    engine = create_engine(urls.app_url, pool_size=1)
    box = SecretBox(parse_keyring(encryption_keys, "LYSS_ENCRYPTION_KEYS"))
    tenant_id = uuid7()
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        session.add(Organization(id=tenant_id, slug="bench", name="Bench", settings=settings or {}))
        await session.flush()
        user = User(email="bench@bench.example.com", hashed_password=None)
        session.add(user)
        kind = await provider_type(session, "openai-compatible", echo_enabled=False)
        session.add(
            Channel(
                tenant_id=tenant_id,
                name="bench",
                type_id=kind.id,
                base_url=upstream_base,
                encrypted_keys=encrypt_keys(box, tenant_id, ["bench-key"]),
                models=list(prices),
            )
        )
        for model, (prompt_price, completion_price) in prices.items():
            session.add(
                ModelPrice(
                    tenant_id=tenant_id, model=model, prompt_price=prompt_price, completion_price=completion_price
                )
            )
        await session.flush()
        _, key = await create_token(
            session,
            tenant_id=tenant_id,
            user_id=user.id,
            data=TokenCreate(name="bench", quota=10**15, rpm_limit=10**9, tpm_limit=2 * 10**9),
            actor=Actor(name="bench"),
        )
        await session.commit()
    await engine.dispose()
    return urls.app_url, key, user


async def add_key(app_url: str, user: User, data: TokenCreate) -> str:
    """Another API key of the benchmark's user (e.g. one whose every call is refused); returns the key."""
    engine = create_engine(app_url, pool_size=1)
    async with tenant_session(create_session_maker(engine), user.tenant_id) as session:
        _, key = await create_token(
            session, tenant_id=user.tenant_id, user_id=user.id, data=data, actor=Actor(name="bench")
        )
        await session.commit()
    await engine.dispose()
    return key
