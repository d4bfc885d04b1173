"""Tenant webhooks: endpoints (admins), the events Lyss emits to them, signed delivery, and budget thresholds."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import aiohttp
import msgspec
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.encryption import SecretBox, secret_context
from app.errors import InvalidRequest, NotFound
from app.jobs.services import create_queue, submit_job
from app.observability.logging import get_logger
from app.settings import Settings
from app.tenants.schemas import WebhookCreate, WebhookUpdate
from app.tenants.services import Actor, audit_change
from db.session import tenant_session
from db.tenant import WebhookDelivery, WebhookEndpoint

# The kinds an endpoint can ask for (WebhookEventKind), as the portal explains them.
EVENT_DESCRIPTIONS = {
    "channel.auto_disabled": "A channel was switched off after an authentication or billing error",
    "channel.reenabled": "An auto-disabled channel passed a test and serves again",
    "job.dead_lettered": "A background job failed its last attempt",
    "budget.threshold": "An API key or the organization used 80 % or 100 % of its budget",
}
DELIVER_KIND = "webhooks.deliver"
TEST_EVENT = "webhook.test"
# What a delivery attempt may take, connection included: a slow receiver is a failed attempt.
DELIVERY_TIMEOUT_SECONDS = 10
DELIVERY_ATTEMPTS = 6
# The longest wait between two attempts, as a multiple of LYSS_WEBHOOK_RETRY_SECONDS.
LONGEST_WAIT_FACTOR = 60
EXCERPT_CHARACTERS = 500
BUDGET_THRESHOLDS = (80, 100)
# A periodic budget's marker outlives its period (a month at most); one without a period keeps its marker.
THRESHOLD_MARKER_TTL_SECONDS = 40 * 86_400
DELIVERIES_SHOWN = 200
logger = get_logger("lyss.webhooks")


def webhook_secret_context(tenant_id: UUID) -> str:
    return secret_context("tenant_webhook_endpoints", "encrypted_secret", tenant_id)


def retry_delays(settings: Settings) -> tuple[float, float]:
    return settings.webhook_retry_seconds, settings.webhook_retry_seconds * LONGEST_WAIT_FACTOR


def checked_url(url: str) -> str:
    """An http(s) address with a host and no credentials in it (they would be sent to, and logged by, anyone)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidRequest("The url is not a web address.", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("The url must be an http:// or https:// address.", field="url")
    if not host:
        raise InvalidRequest("The url needs a host name.", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            "Leave credentials out of the url: the signature proves an event comes from Lyss.", field="url"
        )
    return urllib.parse.urlunsplit(parts)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Lyss-Signature` value: HMAC-SHA256 of `<timestamp>.<body>` under the endpoint's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


async def list_webhooks(session: AsyncSession) -> list[WebhookEndpoint]:
    return list(await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)))


async def existing_webhook(session: AsyncSession, webhook_id: UUID) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, webhook_id)
    if endpoint is None:
        raise NotFound("No such webhook.")
    return endpoint


async def webhook_deliveries(session: AsyncSession, webhook_id: UUID) -> list[WebhookDelivery]:
    """The endpoint's latest attempts, newest first."""
    await existing_webhook(session, webhook_id)
    return list(
        await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.attempt.desc())
            .limit(DELIVERIES_SHOWN)
        )
    )


@dataclass(frozen=True)
class EventHub:
    """What emitting an event needs, for a process that has no worker services at hand (the API)."""

    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    redis: Redis


class WebhookService:
    """Changes to the endpoints, each committed here with its audit event, and the test event."""

    def __init__(self, session: AsyncSession, secret_box: SecretBox, actor: Actor, events: EventHub) -> None:
        self.session = session
        self.secret_box = secret_box
        self.actor = actor
        self.events = events

    async def create(self, tenant_id: UUID, data: WebhookCreate) -> tuple[WebhookEndpoint, str]:
        """Add an endpoint; returns it with its signing secret, which is stored encrypted and not shown again."""
        secret = data.secret or f"whsec_{secrets.token_urlsafe(32)}"
        endpoint = WebhookEndpoint(
            tenant_id=tenant_id,
            url=checked_url(data.url),
            encrypted_secret=self.secret_box.encrypt(secret, context=webhook_secret_context(tenant_id)),
            events=sorted(set(data.events)),
            enabled=data.enabled,
            description=data.description or None,
        )
        self.session.add(endpoint)
        await self.session.flush()
        audit_change(self.session, self.actor, "webhook.created", "webhook", endpoint.id, url=endpoint.url)
        await self.session.commit()
        return endpoint, secret

    async def update(self, webhook_id: UUID, data: WebhookUpdate) -> WebhookEndpoint:
        endpoint = await existing_webhook(self.session, webhook_id)
        changed: list[str] = []
        if data.url is not None:
            endpoint.url = checked_url(data.url)
            changed.append("url")
        if data.events is not None:
            endpoint.events = sorted(set(data.events))
            changed.append("events")
        if data.description is not None:
            endpoint.description = data.description or None
            changed.append("description")
        if data.enabled is not None:
            endpoint.enabled = data.enabled
            changed.append("enabled")
        if data.secret is not None:
            endpoint.encrypted_secret = self.secret_box.encrypt(
                data.secret, context=webhook_secret_context(endpoint.tenant_id)
            )
            changed.append("secret")
        if changed:
            audit_change(self.session, self.actor, "webhook.changed", "webhook", endpoint.id, fields=changed)
        await self.session.commit()
        await self.session.refresh(endpoint)
        return endpoint

    async def delete(self, webhook_id: UUID) -> None:
        """Remove an endpoint and its delivery log; deliveries still queued for it stop at their next attempt."""
        endpoint = await existing_webhook(self.session, webhook_id)
        audit_change(self.session, self.actor, "webhook.deleted", "webhook", endpoint.id, url=endpoint.url)
        await self.session.delete(endpoint)
        await self.session.commit()

    async def send_test(self, webhook_id: UUID) -> UUID:
        """Queue a `webhook.test` event for this endpoint alone (enabled or not); returns the event's id."""
        endpoint = await existing_webhook(self.session, webhook_id)
        tenant_id, url = endpoint.tenant_id, endpoint.url
        await self.session.rollback()
        data = {"message": "A test event sent from Lyss.", "url": url}
        event = await emit(self.events, tenant_id, TEST_EVENT, data, endpoint_id=webhook_id)
        return UUID(event["id"])


class EventSources(Protocol):
    """What emitting an event needs (a worker's services and the gateway both have these)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def session_maker(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def redis(self) -> Redis: ...


def new_event(tenant_id: UUID, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid7()),
        "type": kind,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "tenant_id": str(tenant_id),
        "data": data,
    }


async def emit(
    sources: EventSources, tenant_id: UUID, kind: str, data: dict[str, Any], *, endpoint_id: UUID | None = None
) -> dict[str, Any]:
    """Queue one delivery job per enabled endpoint of the tenant that wants `kind` (or to `endpoint_id` only,
    whatever it wants: the test event). Returns the event.

    Never raises: an event that could not be queued is logged, and the change that caused it stands.
    """
    event = new_event(tenant_id, kind, data)
    try:
        async with tenant_session(sources.session_maker, tenant_id) as session:
            statement = select(WebhookEndpoint.id)
            if endpoint_id is not None:
                statement = statement.where(WebhookEndpoint.id == endpoint_id)
            else:
                statement = statement.where(WebhookEndpoint.enabled.is_(True), WebhookEndpoint.events.any_() == kind)
            endpoint_ids = list(await session.scalars(statement))
            queue = create_queue(sources.redis)
            for target in endpoint_ids:
                await submit_job(
                    session,
                    queue,
                    sources.settings,
                    tenant_id=tenant_id,
                    kind=DELIVER_KIND,
                    payload={"endpoint_id": str(target), "event": event},
                    idempotency_key=f"{event['id']}:{target}",
                )
    except Exception as error:
        logger.warning("webhook event not queued", kind=kind, tenant_id=str(tenant_id), error=type(error).__name__)
    return event


async def announce_dead_job(sources: EventSources, tenant_id: UUID, job_id: UUID, kind: str, error: str) -> None:
    """`job.dead_lettered` for a job whose last attempt failed; not for a webhook delivery, whose failures are
    in the delivery log already (and whose event could fail the same way, without end)."""
    if kind != DELIVER_KIND:
        await emit(sources, tenant_id, "job.dead_lettered", {"job_id": str(job_id), "kind": kind, "error": error})


class AttemptOutcome(msgspec.Struct, frozen=True):
    delivered: bool
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_ms: int


async def post_event(http: aiohttp.ClientSession, url: str, secret: str, event: dict[str, Any]) -> AttemptOutcome:
    """One signed POST of `event` to `url`: delivered on a 2xx; a redirect is an answer like any other non-2xx."""
    body = msgspec.json.encode(event)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Lyss-Webhooks/1",
        "X-Lyss-Event": str(event["type"]),
        "X-Lyss-Delivery": str(event["id"]),
        "X-Lyss-Timestamp": timestamp,
        "X-Lyss-Signature": sign(secret, timestamp, body),
    }
    started = time.monotonic()
    try:
        async with http.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS),
        ) as response:
            text = (await response.content.read(EXCERPT_CHARACTERS * 4)).decode("utf-8", errors="replace")
            status = response.status
    except TimeoutError:
        return _failed(started, f"No answer within {DELIVERY_TIMEOUT_SECONDS} seconds.")
    except (aiohttp.ClientError, OSError, ValueError) as error:
        # ValueError: an address aiohttp cannot use after all (an unencodable host name, say).
        return _failed(started, f"{type(error).__name__}: {str(error)[:300]}")
    delivered = 200 <= status < 300
    return AttemptOutcome(
        delivered=delivered,
        status_code=status,
        response_excerpt=text[:EXCERPT_CHARACTERS] or None,
        error=None if delivered else f"The receiver answered HTTP {status}.",
        latency_ms=_elapsed_ms(started),
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _failed(started: float, error: str) -> AttemptOutcome:
    return AttemptOutcome(
        delivered=False, status_code=None, response_excerpt=None, error=error, latency_ms=_elapsed_ms(started)
    )


async def already_delivered(session: AsyncSession, endpoint_id: UUID, event_id: UUID) -> bool:
    found = await session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.event_id == event_id,
            WebhookDelivery.outcome == "delivered",
        )
    )
    return found is not None


async def record_attempt(
    session: AsyncSession, endpoint_id: UUID, event: dict[str, Any], attempt: int, outcome: AttemptOutcome
) -> None:
    """Log one attempt (the caller commits); a second success of the same event is not recorded twice."""
    await session.execute(
        pg_insert(WebhookDelivery)
        .values(
            id=uuid7(),
            tenant_id=UUID(event["tenant_id"]),
            endpoint_id=endpoint_id,
            event_id=UUID(event["id"]),
            event_kind=event["type"],
            payload=event,
            attempt=attempt,
            outcome="delivered" if outcome.delivered else "failed",
            status_code=outcome.status_code,
            response_excerpt=outcome.response_excerpt,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
        )
        .on_conflict_do_nothing()
    )


class WatchedBudget(msgspec.Struct, frozen=True):
    """A budget to watch: whose it is, what it allows and what is used of it in its current period."""

    scope: str  # "key", "user", "group" or "organization"
    id: UUID
    name: str
    used: int
    quota: int
    period: str  # "daily", "monthly" or "none"
    period_start: datetime.datetime | None  # None: the budget has no period


def threshold_marker(tenant_id: UUID, budget: WatchedBudget, threshold: int) -> str:
    # A budget without a period starts afresh when its quota changes: a raised quota can be crossed again.
    start = budget.period_start.isoformat() if budget.period_start else f"quota-{budget.quota}"
    return f"lyss:webhooks:budget:{tenant_id}:{budget.scope}:{budget.id}:{threshold}:{start}"


async def fire_budget_thresholds(
    sources: EventSources, tenant_id: UUID, budgets: list[WatchedBudget], *, currency: str
) -> int:
    """Emit `budget.threshold` for each threshold a budget has reached, once per budget period; returns how many.

    The marker is taken with SET NX before the event is emitted, so two runs at once fire it once.
    """
    fired = 0
    for budget in budgets:
        if budget.quota <= 0:
            continue
        for threshold in BUDGET_THRESHOLDS:
            if budget.used * 100 < budget.quota * threshold:
                continue
            marker = threshold_marker(tenant_id, budget, threshold)
            expiry = THRESHOLD_MARKER_TTL_SECONDS if budget.period_start else None
            if not await sources.redis.set(marker, 1, nx=True, ex=expiry):
                continue
            data = {
                "scope": budget.scope,
                "id": str(budget.id),
                "name": budget.name,
                "threshold": threshold,
                "used": budget.used,
                "quota": budget.quota,
                "currency": currency,
                "period": budget.period,
                "period_start": budget.period_start.isoformat() if budget.period_start else None,
            }
            await emit(sources, tenant_id, "budget.threshold", data)
            fired += 1
    return fired
