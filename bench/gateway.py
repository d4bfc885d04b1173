"""Gateway benchmark: the latency Lyss adds to a provider call, and its throughput, against a loopback mock.

Run with `make bench`. Traffic goes to 127.0.0.1 only; every wrk run is bounded in time. The same wrk
load is sent straight to the mock provider and through Lyss: the difference is Lyss's added latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from uuid_utils.compat import uuid7

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.schemas import TokenCreate
from app.gateway.services import create_token, encrypt_keys, provider_type
from app.settings import new_key_entry, parse_keyring
from app.tenants.services import Actor
from bench.foundation import WRK_SECONDS, _free_port, _serve, _wrk
from db.auth import User
from db.bootstrap import bootstrap_database
from db.migrations import upgrade_to_head
from db.provider import Channel, ModelPrice
from db.session import create_engine, create_session_maker, tenant_session
from db.tenant import Organization

CONNECTIONS = (1, 16, 64)
BODY = json.dumps({"model": "gpt-bench", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16})


async def _prepare(superuser_url: str, upstream_base: str, encryption_keys: str) -> tuple[str, str]:
    urls = await bootstrap_database(superuser_url, "lyss_gateway_bench")
    await upgrade_to_head(urls.owner_url)
    engine = create_engine(urls.app_url, pool_size=1)
    box = SecretBox(parse_keyring(encryption_keys, "LYSS_ENCRYPTION_KEYS"))
    tenant_id = uuid7()
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        session.add(Organization(id=tenant_id, slug="bench", name="Bench"))
        await session.flush()
        user = User(email="bench@bench.example.com", hashed_password=None)
        session.add(user)
        kind = await provider_type(session, "openai-compatible", echo_enabled=False)
        session.add(
            Channel(
                tenant_id=tenant_id,
                name="mock",
                type_id=kind.id,
                base_url=upstream_base,
                encrypted_keys=encrypt_keys(box, tenant_id, ["mock-key"]),
                models=["gpt-bench"],
            )
        )
        session.add(ModelPrice(tenant_id=tenant_id, model="gpt-bench", prompt_price=150_000, completion_price=600_000))
        await session.flush()
        # A quota far above what the run can spend: the reservation and settlement run, and never refuse.
        _, key = await create_token(
            session,
            tenant_id=tenant_id,
            user_id=user.id,
            data=TokenCreate(name="bench", quota=10**15),
            actor=Actor(name="bench"),
        )
        await session.commit()
    await engine.dispose()
    return urls.app_url, key


def _self_reported_overhead(url: str, key: str, samples: int = 300) -> tuple[float, float]:
    """Lyss's own `x-lyss-overhead-ms` over sequential calls: p50 and p99 in milliseconds."""
    values = []
    with httpx.Client(timeout=10) as client:
        for _ in range(samples):
            response = client.post(
                url, content=BODY, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            )
            values.append(float(response.headers["x-lyss-overhead-ms"]))
    cuts = statistics.quantiles(values, n=100)
    return statistics.median(values), cuts[98]


def main() -> None:
    mock = subprocess.Popen([sys.executable, "-m", "tests.mock_upstream"], stdout=subprocess.PIPE, text=True)
    try:
        assert mock.stdout is not None
        upstream_port = int(mock.stdout.readline())
        direct_url = f"http://127.0.0.1:{upstream_port}/bench/v1/chat/completions"
        with tempfile.TemporaryDirectory(prefix="lyss-gateway-bench-") as scratch:
            postgres = EmbeddedPostgres(Path(scratch) / "postgres")
            redis_server = EmbeddedRedis(Path(scratch) / "redis")
            superuser_url = postgres.start()
            redis_url = redis_server.start()
            try:
                encryption_keys = new_key_entry()
                app_url, key = asyncio.run(
                    _prepare(superuser_url, f"http://127.0.0.1:{upstream_port}/bench/v1", encryption_keys)
                )
                environment = {
                    "PATH": os.environ["PATH"],
                    "DATABASE_URL": app_url,
                    "REDIS_URL": redis_url,
                    "LYSS_ENCRYPTION_KEYS": encryption_keys,
                    "LYSS_JWT_KEYS": new_key_entry(),
                    "LYSS_WORKERS": "1",
                }
                port = _free_port()
                lyss_url = f"http://127.0.0.1:{port}/v1/chat/completions"
                rows = []
                with _serve(environment, port):
                    overhead = _self_reported_overhead(lyss_url, key)
                    for connections in CONNECTIONS:
                        direct = _wrk(direct_url, connections, {}, post_json=BODY)
                        through = _wrk(lyss_url, connections, {"Authorization": f"Bearer {key}"}, post_json=BODY)
                        if through["non_2xx"]:
                            raise SystemExit(f"Lyss answered {through['non_2xx']:.0f} non-2xx responses")
                        rows.append((connections, direct, through))
            finally:
                redis_server.stop()
                postgres.stop()
    finally:
        mock.kill()
    print(f"wrk -t1, {WRK_SECONDS} s per run, POST /v1/chat/completions (non-streamed), one granian worker")
    print(f"x-lyss-overhead-ms over 300 sequential calls: p50 {overhead[0]:.2f} ms, p99 {overhead[1]:.2f} ms")
    print(
        "| connections | upstream alone req/s | p50 ms | p99 ms | through Lyss req/s | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for connections, direct, through in rows:
        print(
            f"| {connections} | {direct['rps']:.0f} | {direct['p50']:.2f} | {direct['p99']:.2f} | {through['rps']:.0f} "
            f"| {through['p50']:.2f} | {through['p99']:.2f} | {through['p50'] - direct['p50']:.2f} "
            f"| {through['p99'] - direct['p99']:.2f} |"
        )


if __name__ == "__main__":
    main()
