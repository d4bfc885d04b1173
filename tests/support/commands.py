"""The `lyss` command in tests: its environment (in process or as a child), and `lyss serve` until a block ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import redis

from app.gateway.usage import HEARTBEAT_KEY
from app.settings import Settings, new_key_entry
from db.auth import User
from db.bootstrap import DatabaseUrls
from tests.support.clients import access_headers

LYSS = str(Path(sys.executable).parent / "lyss")
# The child imports `app` from this checkout, not from wherever the virtualenv's editable install points.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def lyss_environment(**variables: str) -> dict[str, str]:
    """What a shell would pass a `lyss` command (no DATABASE_URL, no REDIS_URL unless given), plus `variables`."""
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {**inherited, "PYTHONPATH": str(REPOSITORY_ROOT), "LYSS_LOG_LEVEL": "warning", **variables}


def cli_environment(settings: Settings) -> dict[str, str]:
    """The variables that point an in-process `lyss` command (click's runner) at the suite's database and keys."""
    values = {
        "LYSS_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "DATABASE_OWNER_URL": settings.database_owner_url,
        "LYSS_ENCRYPTION_KEYS": settings.encryption_keys,
        "LYSS_JWT_KEYS": settings.jwt_keys,
        "LYSS_LOG_LEVEL": "warning",
    }
    return {name: value for name, value in values.items() if value is not None}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningLyss(msgspec.Struct):
    url: str
    settings: Settings
    log: Path
    # The process group of `lyss serve` and its granian workers (to stop one replica the hard way).
    pid: int = 0

    def headers_for(self, user: User) -> dict[str, str]:
        return access_headers(self.settings.jwt_keyring, user)


def _server_environment(settings: Settings, **environment_overrides: str) -> dict[str, str]:
    return lyss_environment(
        DATABASE_URL=settings.database_url or "",
        REDIS_URL=settings.redis_url or "",
        LYSS_ENCRYPTION_KEYS=settings.encryption_keys or "",
        LYSS_JWT_KEYS=settings.jwt_keys or "",
        LYSS_PORT=str(settings.port),
        LYSS_ECHO_PROVIDER="true",
        LYSS_GATEWAY_CACHE_SECONDS="0",
        LYSS_UPSTREAM_READ_TIMEOUT="5",
        DATABASE_POOL_SIZE="10",
        # Links Lyss hands out (invitations, OAuth callbacks) point at this server, as they would in production.
        LYSS_PUBLIC_URL=f"http://127.0.0.1:{settings.port}",
        **environment_overrides,
    )


@contextmanager
def serve_lyss(
    database: DatabaseUrls,
    redis_url: str,
    log_dir: Path,
    *,
    replica_of: RunningLyss | None = None,
    **environment_overrides: str,
) -> Iterator[RunningLyss]:
    """`lyss serve` on a free loopback port until the block ends; its output goes to `log_dir/server.log`.

    `replica_of`: another server whose keys this one shares (as the replicas of one deployment do).
    """
    port = free_port()
    settings = Settings(
        database_url=database.app_url,
        redis_url=redis_url,
        encryption_keys=replica_of.settings.encryption_keys if replica_of else new_key_entry(),
        jwt_keys=replica_of.settings.jwt_keys if replica_of else new_key_entry(),
        port=port,
    )
    environment = _server_environment(settings, **environment_overrides)
    log_path = log_dir / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [LYSS, "serve", "--no-migrate", "--no-demo"], env=environment, start_new_session=True,
        stdout=log, stderr=log, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"lyss serve exited; see {log_path}")
            if time.monotonic() > deadline:
                raise AssertionError(f"lyss serve was not ready within 60 s; see {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield RunningLyss(url=url, settings=settings, log=log_path, pid=process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        log.close()


@contextmanager
def lyss_worker(of: RunningLyss, log_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """`lyss worker` for the server `of` (its database, Redis and keys) until the block ends, once its usage
    flusher has made its first pass; its output goes to `log_dir/worker.log`."""
    log_path = log_dir / "worker.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [LYSS, "worker"], env=_server_environment(of.settings), start_new_session=True, stdout=log, stderr=log,
        text=True,
    )  # fmt: skip
    flusher = redis.Redis.from_url(of.settings.redis_url or "")
    deadline = time.monotonic() + 60
    try:
        while not flusher.exists(HEARTBEAT_KEY):
            if process.poll() is not None:
                raise AssertionError(f"lyss worker exited; see {log_path}")
            assert time.monotonic() < deadline, f"lyss worker did not flush within 60 s; see {log_path}"
            time.sleep(0.1)
        yield process
    finally:
        flusher.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        log.close()
