"""A Redis Cluster as REDIS_URL: the URL forms, and start-up errors (and `lyss doctor` findings) that name what is
wrong with a cluster: no node reachable, slots not served, a plain Redis given as a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from app.cli import main
from app.redis_client import cluster_problem
from app.settings import ConfigurationError, load_settings, new_key_entry
from db.bootstrap import DatabaseUrls
from tests.integration.cli.test_doctor import production
from tests.support.redis_cluster import LocalRedisCluster, LocalRedisServer, free_ports

EXTERNAL = {
    "DATABASE_URL": "postgresql://lyss_app:pw@db.internal:5432/lyss_db",
    "LYSS_ENCRYPTION_KEYS": new_key_entry(),
    "LYSS_JWT_KEYS": new_key_entry(),
}


def test_a_cluster_is_given_as_a_url_or_as_a_list_of_nodes_but_not_both() -> None:
    url = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    assert load_settings({**EXTERNAL, "REDIS_URL": url}).redis_url == url
    listed = load_settings({**EXTERNAL, "LYSS_REDIS_CLUSTER_NODES": "10.0.0.1:7000,10.0.0.2:7000"})
    assert listed.redis_url == url
    assert listed.redis_cluster_nodes is None  # folded, so that a worker started with these settings agrees
    with pytest.raises(ConfigurationError, match="LYSS_REDIS_CLUSTER_NODES and REDIS_URL are both set"):
        load_settings({**EXTERNAL, "REDIS_URL": url, "LYSS_REDIS_CLUSTER_NODES": "10.0.0.1:7000"})


@pytest.mark.parametrize("nodes", ["10.0.0.1", "10.0.0.1:7000,:7001", "10.0.0.1:port", "10.0.0.1:70000"])
def test_a_cluster_node_that_is_not_host_and_port_is_refused_by_name(nodes: str) -> None:
    with pytest.raises(ConfigurationError, match=r"REDIS_URL: '.*' is not host:port"):
        load_settings({**EXTERNAL, "REDIS_URL": f"redis+cluster://{nodes}"})


@pytest.fixture(scope="module")
def plain_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisServer]:
    server = LocalRedisServer(tmp_path_factory.mktemp("plain-redis"), free_ports(1)[0], cluster=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def half_a_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisServer]:
    """One cluster node serving only slots 0-8191: the cluster is missing the rest."""
    server = LocalRedisServer(tmp_path_factory.mktemp("half-cluster"), free_ports(1)[0])
    server.start()
    redis.Redis(port=server.port).execute_command("CLUSTER", "ADDSLOTS", *range(8192))  # type: ignore[no-untyped-call]
    yield server
    server.stop()


def closed_port() -> int:
    return free_ports(1)[0]  # free: nothing listens there


async def test_each_bad_cluster_is_named(plain_redis: LocalRedisServer, half_a_cluster: LocalRedisServer) -> None:
    down = closed_port()
    assert await cluster_problem(f"redis+cluster://127.0.0.1:{down}") == (
        f"no Redis Cluster node is reachable: 127.0.0.1:{down} (ConnectionError)"
    )
    assert await cluster_problem(f"redis+cluster://127.0.0.1:{plain_redis.port}") == (
        f"127.0.0.1:{plain_redis.port} is not a cluster node: cluster support is disabled"
    )
    assert await cluster_problem(f"redis+cluster://127.0.0.1:{half_a_cluster.port}") == (
        f"the cluster is missing slots 8192-16383 (as 127.0.0.1:{half_a_cluster.port} sees it)"
    )
    # An unreachable seed node beside one that answers: the one that answers speaks for the cluster.
    assert await cluster_problem(f"redis+cluster://127.0.0.1:{down},127.0.0.1:{half_a_cluster.port}") == (
        f"the cluster is missing slots 8192-16383 (as 127.0.0.1:{half_a_cluster.port} sees it)"
    )


def test_the_worker_refuses_to_start_on_a_bad_cluster_and_says_why(
    database: DatabaseUrls, plain_redis: LocalRedisServer, half_a_cluster: LocalRedisServer, tmp_path: Path
) -> None:
    down = closed_port()
    for url, expected in (
        (f"redis+cluster://127.0.0.1:{down}", f"no Redis Cluster node is reachable: 127.0.0.1:{down}"),
        (
            f"redis+cluster://127.0.0.1:{plain_redis.port}",
            f"127.0.0.1:{plain_redis.port} is not a cluster node: cluster support is disabled",
        ),
        (f"redis+cluster://127.0.0.1:{half_a_cluster.port}", "the cluster is missing slots 8192-16383"),
    ):
        result = CliRunner().invoke(main, ["worker"], env=production(database, url, tmp_path))
        assert result.exit_code == 1, result.output
        assert f"lyss: cannot run on the Redis Cluster (REDIS_URL): {expected}" in result.output


def test_doctor_reports_a_bad_cluster_as_unsafe_and_a_healthy_one_as_ok(
    database: DatabaseUrls, half_a_cluster: LocalRedisServer, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    bad = CliRunner().invoke(
        main, ["doctor"], env=production(database, f"redis+cluster://127.0.0.1:{half_a_cluster.port}", tmp_path)
    )
    assert bad.exit_code == 1
    assert "Redis Cluster: the cluster is missing slots 8192-16383" in bad.output
    nodes = ",".join(f"127.0.0.1:{server.port}" for server in redis_cluster.servers[:2])
    environment = production(database, "", tmp_path)
    del environment["REDIS_URL"]
    environment["LYSS_REDIS_CLUSTER_NODES"] = f"{nodes},127.0.0.1:{closed_port()}"
    warned = CliRunner().invoke(main, ["doctor"], env=environment)
    assert warned.exit_code == 0, warned.output
    assert "Redis Cluster serves every slot, but these nodes do not answer: 127.0.0.1:" in warned.output
    environment["LYSS_REDIS_CLUSTER_NODES"] = nodes
    healthy = CliRunner().invoke(main, ["doctor"], env=environment)
    assert healthy.exit_code == 0, healthy.output
    assert "Redis Cluster reachable; every slot is served" in healthy.output
