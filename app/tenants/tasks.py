"""The tenants domain's background work: posting webhook events to their endpoints, one job per delivery."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from app.encryption import DecryptionError
from app.jobs.registry import JobContext, JobFailed, job_kind
from app.schemas import Input
from app.tenants.webhooks import (
    DELIVER_KIND,
    DELIVERY_ATTEMPTS,
    DELIVERY_TIMEOUT_SECONDS,
    TEST_EVENT,
    already_delivered,
    post_event,
    record_attempt,
    retry_delays,
    webhook_secret_context,
)
from db.session import tenant_session
from db.tenant import WebhookEndpoint


class DeliveryPayload(Input):
    endpoint_id: UUID
    # The event as emitted: {"id", "type", "created_at", "tenant_id", "data"}.
    event: dict[str, Any]


class DeliveryFailed(Exception):
    """The receiver did not take the event (network error, timeout or a non-2xx answer): tried again later."""


@job_kind(
    DELIVER_KIND,
    payload_type=DeliveryPayload,
    timeout_seconds=DELIVERY_TIMEOUT_SECONDS + 20,
    max_attempts=DELIVERY_ATTEMPTS,
    retry_delays=retry_delays,
)
async def deliver_webhook(job: JobContext) -> dict[str, Any]:
    """Post the event once; every attempt goes in the delivery log, committed whatever the outcome."""
    payload = msgspec.convert(job.payload, DeliveryPayload)
    event_id = UUID(str(payload.event["id"]))
    endpoint = await job.session.get(WebhookEndpoint, payload.endpoint_id)
    if endpoint is None:
        raise JobFailed("The webhook endpoint was removed.")
    if not endpoint.enabled and payload.event.get("type") != TEST_EVENT:
        raise JobFailed("The webhook endpoint is disabled.")
    if await already_delivered(job.session, endpoint.id, event_id):
        return {"delivered": True, "again": False}
    try:
        secret = job.services.secret_box.decrypt(
            endpoint.encrypted_secret, context=webhook_secret_context(endpoint.tenant_id)
        )
    except DecryptionError as error:
        raise JobFailed(f"The endpoint's secret does not decrypt: {error}") from None
    outcome = await post_event(job.services.http, endpoint.url, secret, payload.event)
    # A session of its own: a failed attempt rolls the job's session back, and its log line must stay.
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        await record_attempt(session, endpoint.id, payload.event, job.attempt, outcome)
        await session.commit()
    if not outcome.delivered:
        raise DeliveryFailed(outcome.error or "not delivered")
    return {"delivered": True, "status_code": outcome.status_code, "attempt": job.attempt}
