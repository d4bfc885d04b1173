"""`lyss smoke URL` against a real `lyss serve`: every step passes with the echo channel, and a broken part
fails the step that names it (a wrong password: sign-in; Redis stopped: readiness), later steps skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.embedded import EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.admin import add_demo_gateway
from app.operations.smoke import SMOKE_KEY_NAME
from db.bootstrap import DatabaseUrls
from db.provider import ApiToken
from db.session import tenant_session
from tests.support.commands import LYSS, RunningLyss, lyss_environment, serve_lyss
from tests.support.tenants import TEST_PASSWORD, TenantRows

pytestmark = [pytest.mark.slow, pytest.mark.deployment]  # `lyss smoke`, the check after a deploy

STEPS = ["health", "readiness", "sign-in", "api key", "chat stream", "embedding", "memory search", "api key removal"]


async def smoke(*arguments: str, stdin: str = "") -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        LYSS,
        "smoke",
        *arguments,
        env=lyss_environment(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(stdin.encode())
    return process.returncode or 0, output.decode().splitlines()


def by_step(lines: list[str]) -> dict[str, str]:
    """Each report line by its step's name: `ok    name  12 ms` or `FAIL  name: why`."""
    steps: dict[str, str] = {}
    for line in lines:
        status, _, rest = line.partition(" ")
        rest = rest.strip()
        name = rest.split(":")[0] if status in ("FAIL", "skip") else rest.rsplit("  ", 1)[0]
        for step in sorted(STEPS, key=len, reverse=True):
            if name.startswith(step):
                steps[step] = line
                break
    return steps


@pytest.fixture
async def echo_key(lyss: RunningLyss, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]) -> str:
    async with tenant_session(session_maker, tenant_a.id) as session:
        key = await add_demo_gateway(session, tenant_a.id, tenant_a.admin, SecretBox(lyss.settings.encryption_keyring))
        await session.commit()
    return key


def signed_in_as(tenant: TenantRows) -> list[str]:
    return ["--tenant", tenant.slug, "--email", tenant.admin.email, "--password-stdin"]


async def test_every_step_passes_and_the_temporary_key_is_removed(
    lyss: RunningLyss, echo_key: str, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    code, lines = await smoke(lyss.url, *signed_in_as(tenant_a), stdin=f"{TEST_PASSWORD}\n")
    assert code == 0, lines
    steps = by_step(lines)
    assert list(steps) == STEPS, lines
    assert all(line.startswith("ok ") for line in lines), lines
    assert "first event" in steps["chat stream"]
    assert "16 dimensions" in steps["embedding"]  # the echo provider's vectors
    assert TEST_PASSWORD not in "\n".join(lines)
    async with tenant_session(session_maker, tenant_a.id) as session:
        names = set(await session.scalars(select(ApiToken.name)))
    assert SMOKE_KEY_NAME not in names
    assert "demo" in names


async def test_with_an_api_key_only_the_gateway_steps_run_and_a_wrong_model_fails_the_chat(
    lyss: RunningLyss, echo_key: str
) -> None:
    code, lines = await smoke(lyss.url, "--api-key", echo_key)
    assert code == 0, lines
    steps = by_step(lines)
    assert steps["sign-in"].startswith("skip  sign-in: no credentials given")
    assert steps["chat stream"].startswith("ok ")
    assert steps["embedding"].startswith("ok ")
    assert "api key" not in steps

    code, lines = await smoke(lyss.url, "--api-key", echo_key, "--model", "no-such-model")
    assert code == 1
    steps = by_step(lines)
    assert steps["chat stream"].startswith("FAIL  chat stream: HTTP 4"), lines
    assert steps["embedding"].startswith("FAIL  embedding: HTTP 4"), lines


async def test_a_wrong_password_fails_the_sign_in_and_skips_what_needs_it(
    lyss: RunningLyss, echo_key: str, tenant_a: TenantRows
) -> None:
    code, lines = await smoke(lyss.url, *signed_in_as(tenant_a), stdin="not the password\n")
    assert code == 1
    steps = by_step(lines)
    assert steps["health"].startswith("ok ")
    assert steps["readiness"].startswith("ok ")
    assert steps["sign-in"].startswith("FAIL  sign-in: HTTP 401"), lines
    assert steps["api key"] == "skip  api key: sign-in did not pass"
    assert steps["chat stream"] == "skip  chat stream: api key did not pass"
    assert steps["memory search"] == "skip  memory search: sign-in did not pass"
    assert "not the password" not in "\n".join(lines)


async def test_nothing_listening_fails_the_health_step(echo_key: str) -> None:
    code, lines = await smoke("http://127.0.0.1:9", "--api-key", echo_key)
    assert code == 1
    steps = by_step(lines)
    assert steps["health"].startswith("FAIL  health: ConnectError"), lines
    assert steps["readiness"] == "skip  readiness: health did not pass"


async def test_credentials_or_a_key_are_required(lyss: RunningLyss) -> None:
    code, lines = await smoke(lyss.url)
    assert code == 2
    assert any("--api-key" in line for line in lines)


@pytest.mark.deployment  # a server and a Redis of its own
async def test_redis_stopped_fails_the_readiness_step(
    database: DatabaseUrls, tmp_path: Path, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    # A server with a Redis of its own, so that stopping it leaves the shared server alone.
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start()
    try:
        with serve_lyss(database, url, tmp_path) as running:
            async with tenant_session(session_maker, tenant_a.id) as session:
                box = SecretBox(running.settings.encryption_keyring)  # this server's keys, not the shared one's
                await add_demo_gateway(session, tenant_a.id, tenant_a.admin, box)
                await session.commit()
            code, lines = await smoke(running.url, *signed_in_as(tenant_a), stdin=f"{TEST_PASSWORD}\n")
            assert code == 0, lines
            redis.stop()
            code, lines = await smoke(running.url, *signed_in_as(tenant_a), stdin=f"{TEST_PASSWORD}\n")
    finally:
        redis.stop()
    assert code == 1
    steps = by_step(lines)
    assert steps["health"].startswith("ok ")
    assert steps["readiness"].startswith("FAIL  readiness: redis "), lines
    assert steps["sign-in"] == "skip  sign-in: readiness did not pass"
    assert steps["memory search"] == "skip  memory search: sign-in did not pass"
