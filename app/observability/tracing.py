"""Optional OpenTelemetry tracing (LYSS_OTEL_ENABLED): a span per HTTP request, exported over OTLP/HTTP."""

from __future__ import annotations

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from app.settings import Settings

# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = ["^/healthz$", "^/readyz$", "^/metrics$", "^/portal/static/"]


def _tracer_provider() -> TracerProvider:
    """The process's tracer provider if one was installed (e.g. by `opentelemetry-instrument`), else one
    exporting to OTEL_EXPORTER_OTLP_ENDPOINT (standard OTEL_* variables)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "lyss"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    return provider


def tracing_plugin(settings: Settings) -> OpenTelemetryPlugin | None:
    """Spans for every request Litestar gets, the /v1 API included; None unless LYSS_OTEL_ENABLED."""
    if not settings.otel_enabled:
        return None
    return OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=_tracer_provider(), exclude=UNTRACED_PATHS))
