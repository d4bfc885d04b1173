"""Job kinds: each domain registers its handlers here (in its `tasks.py`); the worker runs them by kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import aiohttp
import msgspec
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.settings import Settings

if TYPE_CHECKING:
    from app.auth.tokens import Principal
    from app.gateway.engine import Gateway
    from app.storage.base import ObjectStore
    from db.tenant import Job


class JobCanceled(Exception):
    """Raised at a checkpoint once the job was asked to stop."""


class JobFailed(Exception):
    """A failure that another attempt would not fix (bad input, missing data): no automatic retry."""


@dataclass(frozen=True)
class WorkerServices:
    """What a worker process shares between its jobs and scheduled tasks."""

    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    redis: Redis
    secret_box: SecretBox
    http: aiohttp.ClientSession
    # Calls to models on a user's behalf (memory extraction, summaries), routed and billed like /v1.
    gateway: Gateway
    # Files that outlive a job (exports), where the API can hand them out.
    objects: ObjectStore


class JobContext(Protocol):
    """What a handler gets: its job's identity and payload, a session scoped to its tenant, and controls.

    Effects written through `session` are committed together with the job's success, so a job that is
    retried after a crash never applies them twice.
    """

    job_id: UUID
    tenant_id: UUID
    actor_user_id: UUID | None
    payload: dict[str, Any]
    attempt: int
    session: AsyncSession
    services: WorkerServices

    async def checkpoint(self) -> None:
        """Stop here (JobCanceled) if the job was canceled; also tells the queue the job is alive."""

    async def progress(self, percent: int, message: str | None = None) -> None: ...

    async def log(self, message: str, **data: Any) -> None: ...

    def after_success(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once the job's success (and its effects) is committed, e.g. to notify other processes."""


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]
# Checks a submission against its caller before anything is recorded (e.g. that a user named in the payload
# is one the caller may act on), so that what the job would refuse is refused at once, as a ServiceError.
Admission = Callable[[AsyncSession, "Principal", dict[str, Any]], Awaitable[None]]
# A kind's own waits between attempts, from the settings: (first wait, longest wait) in seconds; each wait
# doubles the one before, with jitter.
RetryDelays = Callable[[Settings], tuple[float, float]]
# What a job's status means for its subject (a document it ingests, say), where the job system writes it rather
# than the handler: `canceled`, `failed` or `dead` wherever the job ends so (a cancel of a queued job, the
# worker, the recovery sweep), and `queued` when a retry starts an ended job again. Called with a session under
# the job's tenant, in the transaction that writes the status, with the job row as written: if it raises, that
# transaction rolls back and the status is not written either.
OnEnd = Callable[[AsyncSession, "Job", str], Awaitable[None]]


class JobKind(msgspec.Struct, frozen=True):
    name: str
    handler: Handler
    # Who may start it through the API: None (only Lyss itself), "user" or "admin".
    startable_by: str | None = None
    # The payload a caller may give, checked at submission (a msgspec Struct); None: no payload.
    payload_type: type[msgspec.Struct] | None = None
    timeout_seconds: int = 600
    max_attempts: int | None = None
    admit: Admission | None = None
    retry_delays: RetryDelays | None = None
    on_end: OnEnd | None = None


JOB_KINDS: dict[str, JobKind] = {}


def job_kind(
    name: str,
    *,
    startable_by: str | None = None,
    payload_type: type[msgspec.Struct] | None = None,
    timeout_seconds: int = 600,
    max_attempts: int | None = None,
    admit: Admission | None = None,
    retry_delays: RetryDelays | None = None,
    on_end: OnEnd | None = None,
) -> Callable[[Handler], Handler]:
    """Register a handler for a job kind (a decorator)."""

    def register(handler: Handler) -> Handler:
        JOB_KINDS[name] = JobKind(
            name=name,
            handler=handler,
            startable_by=startable_by,
            payload_type=payload_type,
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            admit=admit,
            retry_delays=retry_delays,
            on_end=on_end,
        )
        return handler

    return register


ScheduledFunction = Callable[[WorkerServices], Awaitable[dict[str, Any]]]


# A fixed schedule, or one read from the settings (None or empty: not scheduled).
Schedule = str | Callable[[Settings], str | None]


class ScheduledTask(msgspec.Struct, frozen=True):
    name: str
    function: ScheduledFunction
    cron: Schedule
    timeout_seconds: int = 300

    def cron_for(self, settings: Settings) -> str | None:
        cron = self.cron if isinstance(self.cron, str) else self.cron(settings)
        return cron or None


SCHEDULED_TASKS: dict[str, ScheduledTask] = {}


def scheduled(
    name: str, *, cron: Schedule, timeout_seconds: int = 300
) -> Callable[[ScheduledFunction], ScheduledFunction]:
    """Register platform maintenance that the worker runs on a cron schedule (once per schedule, cluster-wide)."""

    def register(function: ScheduledFunction) -> ScheduledFunction:
        SCHEDULED_TASKS[name] = ScheduledTask(name=name, function=function, cron=cron, timeout_seconds=timeout_seconds)
        return function

    return register
