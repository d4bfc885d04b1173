"""Maintenance mode: a read-only switch kept in Redis, which every process reads through a cache of a second."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Annotated, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest, ServiceError
from app.observability.logging import get_logger
from app.schemas import Input
from app.tenants.services import Actor, record_audit_event

MAINTENANCE_KEY = "lyss:maintenance"
# How stale a process's view may be: a switch reaches every API process and worker within this.
CACHE_SECONDS = 1.0
DEFAULT_RETRY_AFTER = 300
MAX_RETRY_AFTER = 86400
MAX_MESSAGE_LENGTH = 500
GatewayMode = Literal["serve", "refuse"]
GATEWAY_MODES: tuple[GatewayMode, ...] = ("serve", "refuse")
# Writes that stay open while on: signing in and out (API and portal), and the switch itself.
OPEN_WRITES = frozenset(
    {
        "/api/auth/login",
        "/api/auth/login/mfa",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/portal/login",
        "/portal/login/mfa",
        "/portal/logout",
        "/portal/logout-all",
        "/api/platform/maintenance",
    }
)

logger = get_logger("lyss.maintenance")

MaintenanceMessage = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_LENGTH, pattern=r"\S")]
RetryAfter = Annotated[int, msgspec.Meta(ge=1, le=MAX_RETRY_AFTER)]


class MaintenanceInput(Input):
    """`PUT /api/platform/maintenance`: what users are told, when to retry, and whether /v1 keeps serving."""

    message: MaintenanceMessage
    retry_after: RetryAfter = DEFAULT_RETRY_AFTER
    gateway: GatewayMode = "serve"


class Maintenance(msgspec.Struct, frozen=True):
    """The switch while on (what `lyss:maintenance` holds, as JSON)."""

    message: str
    since: datetime.datetime
    gateway: GatewayMode = "serve"
    retry_after: int = DEFAULT_RETRY_AFTER


class MaintenanceStatus(msgspec.Struct, frozen=True):
    """`GET /api/platform/maintenance`: `enabled`, and while on what the switch holds."""

    enabled: bool
    message: str | None = None
    since: datetime.datetime | None = None
    gateway: GatewayMode | None = None
    retry_after: int | None = None

    @classmethod
    def of(cls, state: Maintenance | None) -> MaintenanceStatus:
        if state is None:
            return cls(enabled=False)
        return cls(
            enabled=True,
            message=state.message,
            since=state.since,
            gateway=state.gateway,
            retry_after=state.retry_after,
        )


class UnderMaintenance(ServiceError):
    """A write refused while the switch is on: the operator's message, and when to try again."""

    status_code = 503

    def __init__(self, state: Maintenance) -> None:
        super().__init__(state.message, headers={"Retry-After": str(state.retry_after)})


def check_message(message: str) -> str:
    """The message as stored, or InvalidRequest naming the field (the CLI's check; the API's is its schema)."""
    message = message.strip()
    if not message:
        raise _invalid("The message must not be empty.")
    if len(message) > MAX_MESSAGE_LENGTH or "\x00" in message:
        raise _invalid(f"The message must be at most {MAX_MESSAGE_LENGTH} characters, with no NUL.")
    return message


def _invalid(detail: str) -> ServiceError:
    return InvalidRequest(detail, field="message")


class MaintenanceSwitch:
    """One per process. `current()` costs a clock read while its copy is fresh, one Redis GET a second.

    A process that turns the switch sees it at once; the others within `CACHE_SECONDS`.
    """

    def __init__(self, redis: Redis, cache_seconds: float = CACHE_SECONDS) -> None:
        self.redis = redis
        self.cache_seconds = cache_seconds
        self._state: Maintenance | None = None
        self._fresh_until = 0.0
        self._reading = asyncio.Lock()

    async def current(self) -> Maintenance | None:
        if time.monotonic() < self._fresh_until:
            return self._state
        # One read at a time: the others wait for it rather than answer with the state it replaces.
        async with self._reading:
            if time.monotonic() < self._fresh_until:
                return self._state
            try:
                self._state = _decode(await self.redis.get(MAINTENANCE_KEY))
            except RedisError as error:
                # The last known state holds until Redis answers again, rather than failing every request.
                logger.warning("maintenance switch unreadable; keeping the last known state", error=str(error))
            self._fresh_until = time.monotonic() + self.cache_seconds
            return self._state

    async def turn_on(
        self, message: str, *, retry_after: int = DEFAULT_RETRY_AFTER, gateway: GatewayMode = "serve"
    ) -> Maintenance:
        state = Maintenance(
            message=check_message(message),
            since=datetime.datetime.now(datetime.UTC),
            gateway=gateway,
            retry_after=retry_after,
        )
        await self.redis.set(MAINTENANCE_KEY, msgspec.json.encode(state))
        self._remember(state)
        logger.info("maintenance mode on", gateway=gateway, retry_after=retry_after)
        return state

    async def turn_off(self) -> Maintenance | None:
        """Off; the state it was in (None if it was off already)."""
        raw = await self.redis.getdel(MAINTENANCE_KEY)
        self._remember(None)
        logger.info("maintenance mode off")
        return _decode(raw)

    def _remember(self, state: Maintenance | None) -> None:
        self._state = state
        self._fresh_until = time.monotonic() + self.cache_seconds


def describe_maintenance(state: Maintenance | None) -> str:
    """The switch in one line, for the CLI."""
    if state is None:
        return "Maintenance mode is off."
    gateway = "keeps serving" if state.gateway == "serve" else "answers 503"
    return (
        f"Maintenance mode is on since {state.since:%Y-%m-%d %H:%M:%S} UTC (Retry-After {state.retry_after} s; "
        f"the gateway {gateway}): {state.message}"
    )


def _decode(raw: bytes | str | None) -> Maintenance | None:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=Maintenance)
    except msgspec.DecodeError:
        # Written by hand and wrong: still on (someone meant it), with a message that says so.
        logger.error("the maintenance switch holds malformed JSON", key=MAINTENANCE_KEY)
        return Maintenance(message="Lyss is under maintenance.", since=datetime.datetime.now(datetime.UTC))


def _audit(session: AsyncSession, actor: Actor, action: str, **details: object) -> None:
    record_audit_event(
        session,
        actor=actor.name,
        actor_user_id=actor.user_id,
        action=action,
        target_type="platform",
        details=details,
        client=actor.client,
    )


async def switch_on(
    session: AsyncSession, switch: MaintenanceSwitch, actor: Actor, change: MaintenanceInput
) -> Maintenance:
    """The operator turns maintenance on; the operator's organization's audit trail records it."""
    state = await switch.turn_on(change.message, retry_after=change.retry_after, gateway=change.gateway)
    _audit(
        session,
        actor,
        "platform.maintenance_on",
        message=state.message,
        gateway=state.gateway,
        retry_after=state.retry_after,
    )
    await session.commit()
    return state


async def switch_off(session: AsyncSession, switch: MaintenanceSwitch, actor: Actor) -> None:
    previous = await switch.turn_off()
    _audit(session, actor, "platform.maintenance_off", was_on=previous is not None)
    await session.commit()
