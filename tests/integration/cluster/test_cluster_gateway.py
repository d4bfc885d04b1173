"""The gateway's quota, rate-limit, concurrency, usage and cache-invalidation tests and the job queue's, again,
with the app and the worker on a 3-master Redis Cluster.

The tests are the gateway suite's own, collected here a second time: this module gives them an app, settings and
a clean slate on the cluster instead of the single embedded Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from asgi_lifespan import LifespanManager
from litestar import Litestar

from app.main import create_app
from app.settings import Settings
from db.bootstrap import DatabaseUrls
from tests.integration.gateway.test_backpressure import (
    test_a_channel_limited_to_4_in_flight_never_has_more_at_the_provider_and_its_queue_is_bounded,
    test_a_key_with_max_concurrent_2_runs_2_and_refuses_the_rest_at_once_on_the_record,
    test_max_streams_bounds_streams_only_and_a_users_limit_spans_their_keys,
)
from tests.integration.gateway.test_budgets import (
    test_a_group_budget_is_shared_by_its_members_and_a_narrower_key_is_bounded_by_the_key,
    test_every_refused_and_failed_call_is_on_the_record_with_its_reason,
    test_five_keys_of_one_user_share_the_users_budget_exactly_under_300_concurrent_calls,
)
from tests.integration.gateway.test_gateway import (
    test_a_revoked_key_stops_at_once_in_every_worker_despite_caching,
    test_chat_completion_routes_bills_and_logs,
    test_counters_are_rebuilt_from_postgres_when_redis_is_emptied,
    test_quota_refuses_what_the_balance_cannot_cover,
    test_rpm_limit,
    test_the_organization_budget_caps_all_its_keys_together,
    test_usage_api_filters_pages_and_aggregates,
)
from tests.integration.jobs.test_jobs import (
    test_a_job_runs_once_and_its_record_tells_the_story,
    test_a_job_that_always_fails_ends_dead_with_every_error_in_its_events,
    test_ten_concurrent_submissions_with_one_key_make_one_job_and_one_effect,
)
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.usage_writer import usage_writer

pytestmark = [pytest.mark.slow, pytest.mark.deployment]

__all__ = [
    "test_a_channel_limited_to_4_in_flight_never_has_more_at_the_provider_and_its_queue_is_bounded",
    "test_a_group_budget_is_shared_by_its_members_and_a_narrower_key_is_bounded_by_the_key",
    "test_a_job_runs_once_and_its_record_tells_the_story",
    "test_a_job_that_always_fails_ends_dead_with_every_error_in_its_events",
    "test_a_key_with_max_concurrent_2_runs_2_and_refuses_the_rest_at_once_on_the_record",
    "test_a_revoked_key_stops_at_once_in_every_worker_despite_caching",
    "test_chat_completion_routes_bills_and_logs",
    "test_counters_are_rebuilt_from_postgres_when_redis_is_emptied",
    "test_every_refused_and_failed_call_is_on_the_record_with_its_reason",
    "test_five_keys_of_one_user_share_the_users_budget_exactly_under_300_concurrent_calls",
    "test_max_streams_bounds_streams_only_and_a_users_limit_spans_their_keys",
    "test_quota_refuses_what_the_balance_cannot_cover",
    "test_rpm_limit",
    "test_ten_concurrent_submissions_with_one_key_make_one_job_and_one_effect",
    "test_the_organization_budget_caps_all_its_keys_together",
    "test_usage_api_filters_pages_and_aggregates",
]


@pytest.fixture(scope="module")
def cluster_settings(session_settings: Settings, redis_cluster: LocalRedisCluster) -> Settings:
    return msgspec.structs.replace(session_settings, redis_url=redis_cluster.url)


@pytest.fixture
def clean_redis(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.flush()


@pytest.fixture
def settings(cluster_settings: Settings, clean_database: None, clean_redis: None) -> Settings:
    return cluster_settings


@pytest.fixture(scope="module", autouse=True)
def cluster_usage_writer(database: DatabaseUrls, redis_cluster: LocalRedisCluster) -> Iterator[None]:
    """The usage log of the calls made here is written from the cluster's streams, as `lyss worker` would."""
    with usage_writer(database.app_url, redis_cluster.url):
        yield


@pytest.fixture(scope="module")
async def app(cluster_settings: Settings) -> AsyncIterator[Litestar]:
    application = create_app(cluster_settings)
    asgi: Any = application
    async with LifespanManager(asgi):
        yield application
