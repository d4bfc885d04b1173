"""The job worker: runs each attempt against the job's durable record, and the scheduled maintenance.

An attempt moves its record `queued -> running` when it starts and to its outcome when it ends. Every
outcome is written only if the record still belongs to this attempt (its `attempts` number), so an attempt
that a crashed worker left behind, or that a cancel or retry overtook, can never overwrite a newer one.
A handler's effects go through the attempt's session and are committed in the same transaction as
`succeeded`: a job that is retried after a crash never applies them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
import msgspec
import structlog
from saq import Job as QueueJob
from saq import Worker
from saq.job import CronJob
from saq.types import PartialTimersDict
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.usage import UsageFlusher
from app.jobs.registry import JOB_KINDS, SCHEDULED_TASKS, Handler, JobCanceled, JobFailed, ScheduledTask, WorkerServices
from app.jobs.services import (
    RUN_JOB,
    add_event,
    cancel_flag_key,
    cluster_task_name,
    job_ended,
    load_job_modules,
)
from app.observability.logging import get_logger
from app.observability.maintenance import MaintenanceSwitch
from app.resources import Resources
from app.settings import Settings
from app.tenants.webhooks import announce_dead_job
from db.session import tenant_session
from db.tenant import JOB_TERMINAL_STATUSES, Job, Organization

ERROR_TEXT_LIMIT = 2000
logger = get_logger("lyss.jobs.worker")


def describe_error(error: BaseException) -> str:
    """What a job's owner is told about a failure: its type and first line, never a traceback.

    Database errors carry the statement and its parameters: their owner gets the type only (the worker's
    log has the rest).
    """
    name = type(error).__name__
    if isinstance(error, SQLAlchemyError):
        return f"{name}: a database error (details in the worker's log)"
    if isinstance(error, TimeoutError) and not str(error):
        return "TimeoutError: the job ran longer than its timeout"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"{name}: {first_line}" if first_line else name)[:ERROR_TEXT_LIMIT]


@dataclass
class RunningJob:
    """The JobContext a handler gets for one attempt."""

    job_id: UUID
    tenant_id: UUID
    actor_user_id: UUID | None
    payload: dict[str, Any]
    attempt: int
    session: AsyncSession
    services: WorkerServices
    _progress: int = field(default=0, repr=False)
    _after_success: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    def after_success(self, action: Callable[[], Awaitable[None]]) -> None:
        self._after_success.append(action)

    async def checkpoint(self) -> None:
        if await self.services.redis.exists(cancel_flag_key(self.job_id)):
            raise JobCanceled

    async def progress(self, percent: int, message: str | None = None) -> None:
        self._progress = max(0, min(100, percent))
        async with tenant_session(self.services.session_maker, self.tenant_id) as session:
            await session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.status == "running")
                .values(progress=self._progress)
            )
            await add_event(
                session, self.job_id, "progress", attempt=self.attempt, message=message, progress=self._progress
            )
            await session.commit()

    async def log(self, message: str, **data: Any) -> None:
        async with tenant_session(self.services.session_maker, self.tenant_id) as session:
            await add_event(
                session, self.job_id, "log", attempt=self.attempt, message=message[:ERROR_TEXT_LIMIT], **data
            )
            await session.commit()


class _Started(msgspec.Struct, frozen=True):
    kind: str
    payload: dict[str, Any]
    created_by: UUID | None
    attempt: int
    timeout_seconds: int
    cancel_requested: bool


class JobAttempt:
    """One attempt of one job, from SAQ's delivery to the recorded outcome."""

    def __init__(self, services: WorkerServices, queue_job: QueueJob, job_id: UUID, tenant_id: UUID) -> None:
        self.services = services
        self.queue_job = queue_job
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.attempt = 0
        self.kind = ""

    async def run(self) -> dict[str, Any] | None:
        started = await self._start()
        if started is None:
            return None
        self.attempt = started.attempt
        self.kind = started.kind
        if started.cancel_requested:
            await self._finish("canceled", "canceled", "Canceled before it started.")
            return None
        kind = JOB_KINDS.get(started.kind)
        if kind is None:
            await self._finish("failed", "failed", f"This worker has no handler for the job kind '{started.kind}'.")
            return None
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            async with tenant_session(self.services.session_maker, self.tenant_id) as session:
                context = RunningJob(
                    job_id=self.job_id,
                    tenant_id=self.tenant_id,
                    actor_user_id=started.created_by,
                    payload=started.payload,
                    attempt=started.attempt,
                    session=session,
                    services=self.services,
                )
                return await self._run_handler(context, kind.handler, started.timeout_seconds)
        finally:
            heartbeat.cancel()

    async def _run_handler(self, context: RunningJob, handler: Handler, timeout_seconds: int) -> dict[str, Any] | None:
        session = context.session
        try:
            async with asyncio.timeout(timeout_seconds):
                result = await handler(context)
            if await self._succeed(session, result):
                for action in context._after_success:
                    try:
                        await action()
                    except Exception as error:
                        # The job succeeded and stays so; a missed notification only delays a cache refresh.
                        logger.warning(
                            "after-success action failed", job_id=str(self.job_id), error=describe_error(error)
                        )
            return result
        except JobCanceled:
            await _discard(session)
            await self._finish("canceled", "canceled", "Stopped at a checkpoint after a cancel request.")
            return None
        except asyncio.CancelledError:
            # SAQ cancels the task for a cancel request (abort), at shutdown, or when it thinks the job lost
            # its worker; only the first is the user's wish, the others run the job again.
            await _discard(session)
            if await self._cancel_requested():
                await self._finish("canceled", "canceled", "Stopped after a cancel request.")
            else:
                await self._finish("queued", "interrupted", "The worker stopped during this attempt; it runs again.")
            raise
        except JobFailed as error:
            await _discard(session)
            message = describe_error(error)
            await self._finish("failed", "failed", message, last_error=message)
            return None
        except Exception as error:
            await _discard(session)
            message = describe_error(error)
            if self.queue_job.retryable:
                await self._finish("queued", "retrying", message, last_error=message)
            else:
                if await self._finish("dead", "dead", message, last_error=message):
                    await announce_dead_job(self.services, self.tenant_id, self.job_id, self.kind, message)
            raise  # SAQ schedules the retry with backoff, or records the failure

    async def _start(self) -> _Started | None:
        async with tenant_session(self.services.session_maker, self.tenant_id) as session:
            job = await session.scalar(select(Job).where(Job.id == self.job_id).with_for_update())
            if job is None or job.queue_key != self.queue_job.key or job.status in JOB_TERMINAL_STATUSES:
                # Finished already (e.g. a crash between commit and acknowledgement), or overtaken by a retry.
                await session.rollback()
                logger.info("job delivery skipped", job_id=str(self.job_id), status=job.status if job else None)
                return None
            if await session.scalar(select(Organization.status)) != "active":
                # A suspended organization's jobs wait, still queued: reactivating it sends them again.
                job.status = "queued"
                await add_event(
                    session, self.job_id, "paused", attempt=job.attempts, message="The organization is suspended."
                )
                await session.commit()
                logger.info("job paused: its organization is suspended", job_id=str(self.job_id))
                return None
            interrupted = job.status == "running"
            job.status = "running"
            job.attempts += 1
            job.started_at = datetime.datetime.now(datetime.UTC)
            job.finished_at = None
            started = _Started(
                kind=job.kind,
                payload=dict(job.payload),
                created_by=job.created_by,
                attempt=job.attempts,
                timeout_seconds=job.timeout_seconds,
                cancel_requested=job.cancel_requested_at is not None,
            )
            message = "The previous attempt's worker was lost; starting again." if interrupted else None
            await add_event(session, self.job_id, "started", attempt=job.attempts, message=message)
            await session.commit()
            return started

    async def _succeed(self, session: AsyncSession, result: dict[str, Any] | None) -> bool:
        written = await session.scalar(
            update(Job)
            .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.status == "running")
            .values(status="succeeded", progress=100, result=result, finished_at=func.now(), last_error=None)
            .returning(Job.id)
        )
        if written is None:
            # Another attempt or a cancel owns the record now: this attempt's effects must not land.
            await session.rollback()
            logger.warning("job outcome discarded: the record moved on", job_id=str(self.job_id))
            return False
        await add_event(session, self.job_id, "succeeded", attempt=self.attempt)
        await session.commit()
        await self.services.redis.delete(cancel_flag_key(self.job_id))
        return True

    async def _finish(self, status: str, event: str, message: str, *, last_error: str | None = None) -> bool:
        """Record the attempt's outcome; False if the record had moved on (another attempt or a cancel owns it)."""
        terminal = status in JOB_TERMINAL_STATUSES
        async with tenant_session(self.services.session_maker, self.tenant_id) as session:
            written = await session.scalar(
                update(Job)
                .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.status == "running")
                .values(
                    status=status,
                    finished_at=func.now() if terminal else None,
                    **({"last_error": last_error} if last_error is not None else {}),
                )
                .returning(Job)
            )
            if written is None:
                await session.rollback()
                return False
            await add_event(session, self.job_id, event, attempt=self.attempt, message=message)
            if terminal:
                await job_ended(session, written, status)
            await session.commit()
        if terminal:
            await self.services.redis.delete(cancel_flag_key(self.job_id))
        return True

    async def _cancel_requested(self) -> bool:
        async with tenant_session(self.services.session_maker, self.tenant_id) as session:
            requested = await session.scalar(select(Job.cancel_requested_at).where(Job.id == self.job_id))
            await session.rollback()
        return requested is not None

    async def _heartbeat(self) -> None:
        """Tell SAQ this attempt's worker is alive; a job that stops beating is swept and run again."""
        interval = max(1.0, self.services.settings.job_heartbeat_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.queue_job.update()


async def _discard(session: AsyncSession) -> None:
    # The connection may be mid-statement when the task is cancelled; closing it is enough then.
    with contextlib.suppress(Exception):
        await session.rollback()


async def run_job(ctx: dict[str, Any], *, job_id: str, tenant_id: str) -> dict[str, Any] | None:
    """The one SAQ function: every job kind travels through it."""
    # Every log line of the attempt, the handler's own included, names the job and its tenant (SAQ runs each
    # job in its own task, so the binding ends with it).
    with structlog.contextvars.bound_contextvars(job_id=job_id, tenant_id=tenant_id):
        return await JobAttempt(ctx["services"], ctx["job"], UUID(job_id), UUID(tenant_id)).run()


def _scheduled_function(task: ScheduledTask, name: str) -> Any:
    async def run_scheduled(ctx: dict[str, Any]) -> dict[str, Any]:
        result = await task.function(ctx["services"])
        logger.debug("scheduled task done", task=task.name, **result)
        return result

    # SAQ names a cron job's function, and keys its uniqueness, by this.
    run_scheduled.__qualname__ = name
    return run_scheduled


class PausingWorker(Worker[Any]):
    """A SAQ worker that takes nothing off the queue while maintenance mode is on.

    Jobs stay queued and scheduled tasks wait (each runs once, at most, when it is over: SAQ keys a cron
    job by its name); attempts already running finish. Checked before each dequeue, through the switch's
    one-second cache.
    """

    def __init__(self, *args: Any, maintenance: MaintenanceSwitch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.maintenance = maintenance
        self._upkeep: list[asyncio.Task[None]] = []

    async def process(self) -> bool:
        if await self.maintenance.current() is not None:
            await asyncio.sleep(self.maintenance.cache_seconds)
            return False
        return await super().process()

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self._upkeep = await super().upkeep()
        return self._upkeep

    async def stop(self) -> None:
        # SAQ gives the shutdown grace period to every task, its upkeep timers too, and they see the stop only
        # after sleeping out their interval (up to ten seconds): an idle worker took the whole grace period to
        # stop. The timers have nothing to finish; they go at once, and running jobs keep their grace.
        for task in self._upkeep:
            task.cancel()
        await super().stop()


def create_worker(settings: Settings, *, handle_signals: bool = True, with_schedule: bool = True) -> PausingWorker:
    """A SAQ worker for resolved settings; `await worker.start()` runs it until it is stopped.

    `with_schedule=False` leaves the cron tasks out (tests run them by hand, at a time of their choosing).
    """
    load_job_modules(settings)
    resources = Resources.build(settings, pool_size=max(settings.database_pool_size, settings.worker_concurrency + 2))
    redis, queue, gateway = resources.redis, resources.job_queue, resources.gateway

    stop_listening = asyncio.Event()
    # The one writer of the usage log: API processes only append to the Redis streams it reads.
    flusher = UsageFlusher(redis, resources.session_maker)

    async def startup(ctx: dict[str, Any]) -> None:
        await queue.connect()
        # SAQ sweeps as it starts, while its first dequeues run: a message caught between leaving the queue
        # and being marked active would be taken for abandoned and delivered twice (harmless, the record
        # fences attempts, but wasted). Holding the sweep lock for one interval defers that first sweep.
        await redis.set(queue.namespace("sweep"), 1, ex=settings.job_sweep_seconds, nx=True)
        ctx["services"] = WorkerServices(
            settings=settings,
            session_maker=resources.session_maker,
            redis=redis,
            secret_box=resources.secret_box,
            http=aiohttp.ClientSession(),
            gateway=gateway,
            objects=resources.object_store,
        )
        # Channel and price changes made through the API reach this worker's gateway cache at once.
        ctx["cache_listener"] = asyncio.create_task(gateway.catalog.listen_for_changes(redis, stop_listening))
        ctx["usage_flusher"] = asyncio.create_task(flusher.run(stop_listening))

    async def shutdown(ctx: dict[str, Any]) -> None:
        stop_listening.set()
        for name in ("cache_listener", "usage_flusher"):
            if name in ctx:
                await ctx[name]
        if "usage_flusher" in ctx:
            await flusher.drain()  # what the API processes settled until now is written before this worker goes
        services: WorkerServices | None = ctx.get("services")
        if services is not None:
            await services.http.close()
        await resources.close()

    tasks = list(SCHEDULED_TASKS.values())
    # Every worker can run every scheduled task (another worker may have queued it); only the ones
    # `with_schedule` put them on the queue.
    names = [cluster_task_name(queue, task.name) for task in tasks]
    scheduled = [_scheduled_function(task, name) for task, name in zip(tasks, names, strict=True)]
    worker = PausingWorker(
        queue,
        maintenance=resources.maintenance,
        functions=[
            (RUN_JOB, run_job),
            *zip(names, scheduled, strict=True),
        ],
        cron_jobs=[
            CronJob(function, cron=cron, timeout=task.timeout_seconds)
            for function, task in zip(scheduled, tasks, strict=True)
            if with_schedule and (cron := task.cron_for(settings))
        ],
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        timers=PartialTimersDict(schedule=1, worker_info=10, sweep=settings.job_sweep_seconds, abort=1),
        # A finite wait lets an idle worker notice a stop request within a second.
        dequeue_timeout=1,
        shutdown_grace_period_s=settings.worker_shutdown_grace_seconds,
    )
    if not handle_signals:
        worker.SIGNALS = []  # the embedding process owns the signals
    return worker
