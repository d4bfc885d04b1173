"""The Redis client Lyss runs on: one server (redis://, rediss://, unix://) or a Redis Cluster (redis+cluster://)."""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

from litestar.di import NamedDependency
from litestar.params import SkipValidation
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError, ResponseError

from app.settings import REDIS_CLUSTER_SCHEME as CLUSTER_SCHEME
from app.settings import cluster_nodes

CLUSTER_SLOTS = 16384

# How handlers and providers take the shared client: on a cluster it is a RedisCluster standing in for `Redis`
# (see `create_redis`), which Litestar's check of a dependency against its annotation would refuse.
RedisDependency = NamedDependency[SkipValidation[Redis]]
CHECK_TIMEOUT_SECONDS = 3.0
# redis-py's cluster client has no waiting pool: past its cap a command fails at once (MaxConnectionsError)
# where the single-server pool waits for a free connection. So its cap, per node and process, is far above
# the concurrency of a burst (300 concurrent calls of one tenant are 300 scripts on one master at once).
CLUSTER_MAX_CONNECTIONS_PER_NODE = 2_000


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit("redis://" + url[len(CLUSTER_SCHEME) :].split(",", 1)[0].split("/", 1)[0])
    rest = url[len(CLUSTER_SCHEME) :]
    if "@" not in rest:
        return {}
    return {"username": parts.username or None, "password": parts.password}


def create_redis(url: str, *, max_connections: int, wait_seconds: float) -> Redis:
    """The client every part of Lyss is given.

    A cluster client is handed on as a `Redis`: `RedisCluster` answers the same commands, scripts, pipelines and
    pub/sub; the few places that reach below the command API (`DirectScripts`, closing) check which it is.
    """
    if not is_cluster_url(url):
        return Redis(
            connection_pool=BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_seconds)
        )
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        max_connections=max(max_connections, CLUSTER_MAX_CONNECTIONS_PER_NODE),
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        **_credentials(url),
    )
    return cast(Redis, cluster)


def as_cluster(redis: Redis) -> RedisCluster | None:
    candidate: object = redis
    return candidate if isinstance(candidate, RedisCluster) else None


async def close_redis(redis: Redis) -> None:
    cluster = as_cluster(redis)
    if cluster is not None:
        await cluster.aclose()
        return
    await redis.aclose()
    await redis.connection_pool.disconnect()


async def _command(node: Redis, *args: str) -> Any:
    untyped: Any = node  # redis-py leaves execute_command without types
    return await untyped.execute_command(*args)


def _missing_ranges(covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    missing: list[tuple[int, int]] = []
    next_slot = 0
    for first, last in sorted(covered):
        if first > next_slot:
            missing.append((next_slot, first - 1))
        next_slot = max(next_slot, last + 1)
    if next_slot < CLUSTER_SLOTS:
        missing.append((next_slot, CLUSTER_SLOTS - 1))
    return missing


async def _node_problem(host: str, port: int, credentials: dict[str, Any]) -> str | None:
    """What is wrong with the cluster as this node sees it (None: it serves every slot)."""
    node = Redis(host=host, port=port, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, **credentials)
    try:
        try:
            info = (await _command(node, "CLUSTER", "INFO")).decode()
        except ResponseError as error:
            if "cluster support disabled" in str(error):
                return f"{host}:{port} is not a cluster node: cluster support is disabled"
            raise
        if "cluster_state:ok" in info:
            return None
        slots = await _command(node, "CLUSTER", "SLOTS")
        covered = [(int(entry[0]), int(entry[1])) for entry in slots]
        ranges = ", ".join(
            str(first) if first == last else f"{first}-{last}" for first, last in _missing_ranges(covered)
        )
        if ranges:
            return f"the cluster is missing slots {ranges} (as {host}:{port} sees it)"
        return f"the cluster state is not ok (as {host}:{port} sees it)"
    finally:
        await node.aclose()


async def cluster_problem(url: str) -> str | None:
    """Why Lyss cannot run on this cluster (None: it can): nodes unreachable, slots not served, not a cluster."""
    nodes = cluster_nodes(url)
    credentials = _credentials(url)
    unreachable: list[str] = []
    for host, port in nodes:
        try:
            problem = await asyncio.wait_for(_node_problem(host, port, credentials), CHECK_TIMEOUT_SECONDS * 2)
        except (RedisError, OSError, TimeoutError) as error:
            unreachable.append(f"{host}:{port} ({type(error).__name__})")
            continue
        # The first node that answers speaks for the cluster: they share one view of the slots.
        return problem
    return "no Redis Cluster node is reachable: " + ", ".join(unreachable)


async def unreachable_nodes(url: str) -> list[str]:
    """The seed nodes that do not answer (the cluster may still be fine without them)."""
    credentials = _credentials(url)
    missing: list[str] = []
    for host, port in cluster_nodes(url):
        node = Redis(host=host, port=port, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, **credentials)
        try:
            await asyncio.wait_for(node.ping(), CHECK_TIMEOUT_SECONDS * 2)
        except (RedisError, OSError, TimeoutError):
            missing.append(f"{host}:{port}")
        finally:
            await node.aclose()
    return missing
