"""`/metrics` after real gateway traffic: request timings by route, gateway overhead, upstream time per
channel, refusals by reason and the database pool, next to the job series."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_gateway_traffic_shows_in_the_metrics(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    channel = await add_channel(client, auth_headers(tenant_a.admin), upstream, "metrics")
    key, _ = await issue_key(client, auth_headers(tenant_a.user), rpm_limit=2)
    before = await scrape(client)
    statuses = [
        (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]  # the third is over the key's requests per minute
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"method": "POST", "route": "/v1/chat/completions"}
    assert grew("lyss_http_request_duration_seconds_count", **route, status="200") == 2
    assert grew("lyss_http_request_duration_seconds_count", **route, status="429") == 1
    assert grew("lyss_gateway_overhead_seconds_count", endpoint="chat") == 2
    assert grew("lyss_gateway_overhead_seconds_sum", endpoint="chat") > 0
    assert grew("lyss_upstream_duration_seconds_count", channel_id=channel["id"], outcome="ok") == 2
    assert grew("lyss_gateway_rejections_total", reason="rpm") == 1
    assert value(after, "lyss_db_pool_connections", state="idle") >= 1
    assert ("lyss_job_queue_depth", (("state", "waiting"),)) in after  # the scrape-time series are still there
    # Routes are templates, never raw paths with ids in them.
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
    assert not any(uuid.search(dict(labels).get("route", "")) for _, labels in after)
