"""A master of the Redis Cluster dies (SIGKILL) in the middle of concurrent calls against a small quota: once its
replica has taken over, calls are served again, and no credit is overspent or lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from asgi_lifespan import LifespanManager
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.limits import GatewayLimits
from app.main import create_app
from app.settings import Settings
from db.bootstrap import DatabaseUrls
from db.provider import UsageLog
from tests.integration.gateway.test_budgets import CALL_COST, call, priced_channel
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import issue_key, token_id_of, usage_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.redis_cluster import LocalRedisCluster, redis_at
from tests.support.tenants import TenantRows
from tests.support.usage_writer import usage_writer

pytestmark = [pytest.mark.slow, pytest.mark.deployment]

QUOTA_CALLS = 40


@pytest.fixture(scope="module")
def dying_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A cluster of this module's own: its test kills one of the masters."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("dying-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster_settings(session_settings: Settings, dying_cluster: LocalRedisCluster) -> Settings:
    return msgspec.structs.replace(session_settings, redis_url=dying_cluster.url)


@pytest.fixture
def clean_redis(dying_cluster: LocalRedisCluster) -> None:
    dying_cluster.flush()


@pytest.fixture
def settings(cluster_settings: Settings, clean_database: None, clean_redis: None) -> Settings:
    return cluster_settings


@pytest.fixture(scope="module", autouse=True)
def cluster_usage_writer(database: DatabaseUrls, dying_cluster: LocalRedisCluster) -> Iterator[None]:
    """The usage log of the calls made here is written from the cluster's streams, as `lyss worker` would."""
    with usage_writer(database.app_url, dying_cluster.url):
        yield


@pytest.fixture(scope="module")
async def app(cluster_settings: Settings) -> AsyncIterator[Litestar]:
    application = create_app(cluster_settings)
    asgi: Any = application
    async with LifespanManager(asgi):
        yield application


async def test_after_a_master_dies_its_replica_serves_and_no_credit_is_overspent_or_lost(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    dying_cluster: LocalRedisCluster,
) -> None:
    await priced_channel(client, tenant_a, upstream, auth_headers)
    key, token = await issue_key(client, auth_headers(tenant_a.user), quota=QUOTA_CALLS * CALL_COST)
    balance_key = GatewayLimits.token_used_key(tenant_a.id, token_id_of(token))
    statuses: list[int] = []

    async def batch(size: int) -> list[int]:
        return [response.status_code for response in await asyncio.gather(*(call(client, key) for _ in range(size)))]

    statuses += await batch(10)
    master = dying_cluster.master_of(balance_key)
    upstream.behave("primary", words=CALL_COST, hang_seconds=1.0)
    calls_in_flight = asyncio.ensure_future(batch(10))
    await asyncio.sleep(0.5)  # reserved, and waiting for the provider's answer: they settle on the dead master
    master.kill()
    statuses += await calls_in_flight
    upstream.behave("primary", words=CALL_COST)
    killed_at = time.monotonic()
    # Until the replica is promoted, calls on the tenant's slot fail (503) rather than go unmetered.
    after: list[int] = []
    while time.monotonic() - killed_at < 30 and 429 not in after:
        after += await batch(5)
        await asyncio.sleep(0.2)
    statuses += after
    assert set(statuses) <= {200, 429, 503}, statuses
    assert 200 in after[after.index(503) if 503 in after else 0 :], after  # served again after the failover
    assert 429 in after  # and refused once the quota is spent, as before
    served = statuses.count(200)
    assert served * CALL_COST <= QUOTA_CALLS * CALL_COST  # not overspent
    answered: list[UsageLog] = []
    for _ in range(3):  # the flusher writes the records every half second, once their node answers again
        answered = [row for row in await usage_rows(session_maker, tenant_a, served) if row.status_code == 200]
        if len(answered) >= served:
            break
        await asyncio.sleep(0.2)
    billed = sum(row.cost for row in answered)
    assert (len(answered), billed) == (served, served * CALL_COST)  # not lost: every answer is on the record
    async with redis_at(settings.redis_url or "") as redis:
        balance = int(await redis.get(balance_key) or 0)
    assert balance >= billed  # the balance holds at least what PostgreSQL counts
