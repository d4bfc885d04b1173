"""Tracing is off by default; with LYSS_OTEL_ENABLED each request (not the probes) becomes a span."""

from __future__ import annotations

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.observability.tracing import tracing_plugin
from app.settings import Settings
from tests.support.clients import AuthHeaders, app_client
from tests.support.tenants import TenantRows


async def test_requests_become_spans_only_when_tracing_is_on(
    settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    assert tracing_plugin(settings) is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # as `opentelemetry-instrument` would; Lyss then uses it
    async with app_client(msgspec.structs.replace(settings, otel_enabled=True)) as client:
        me = await client.get("/api/me", headers=auth_headers(tenant_a.user))
        assert me.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401  # the gateway's own key check, behind the mount
    spans = exporter.get_finished_spans()
    routes = {str(span.attributes.get("http.route")) for span in spans if span.attributes}
    assert "GET /api/me" in routes  # Litestar names the route by method and template
    assert "GET /v1/models" in {span.name for span in spans}
    assert not any("/healthz" in str(span.name) for span in spans)
    assert not any("/healthz" in str(route) for route in routes)
