"""A real 3-master, 3-replica Redis Cluster on loopback, started once per test process that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
