"""Job kinds for the tests (registered through LYSS_JOB_MODULES, as an extension would register its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.registry import JobContext, JobFailed, job_kind
from app.observability.logging import get_logger
from db.auth import User
from db.tenant import AuditEvent, Job

logger = get_logger("tests.support.job_handlers")


def checkpoint_counter_key(marker: str) -> str:
    return f"test:checkpoints:{marker}"


class EffectPayload(msgspec.Struct, forbid_unknown_fields=True):
    marker: str
    steps: int = 0
    pause_seconds: float = 0.0


@job_kind("test.effect", startable_by="user", payload_type=EffectPayload)
async def record_effect(job: JobContext) -> dict[str, Any]:
    """Work in steps (a checkpoint each, counted in Redis), then write one audit row: the job's effect."""
    payload = msgspec.convert(job.payload, EffectPayload)
    for _ in range(payload.steps):
        await job.checkpoint()
        await job.services.redis.incr(checkpoint_counter_key(payload.marker))
        await asyncio.sleep(payload.pause_seconds)
    job.session.add(AuditEvent(actor="job", action="test.effect", target_id=payload.marker))
    logger.info("effect recorded", marker=payload.marker)
    return {"marker": payload.marker, "attempt": job.attempt}


@job_kind("test.always_fails", startable_by="user")
async def always_fail(job: JobContext) -> dict[str, Any]:
    raise RuntimeError(f"upstream exploded on attempt {job.attempt}")


@job_kind("test.database_error", startable_by="user", max_attempts=1)
async def database_error(job: JobContext) -> dict[str, Any]:
    await job.session.execute(text("SELECT secret_column FROM no_such_table WHERE token = 'sk-do-not-show'"))
    return {}


@job_kind("test.fails_first", startable_by="user")
async def fail_first(job: JobContext) -> dict[str, Any]:
    """A permanent failure on its first attempt (no automatic retry); fine when run again by hand."""
    if job.attempt == 1:
        raise JobFailed("the input was rejected")
    return {"attempt": job.attempt}


@job_kind("test.snoop", startable_by="user")
async def snoop(job: JobContext) -> dict[str, Any]:
    """Report which tenants' rows this job can see."""
    user_tenants = {str(tenant) for tenant in await job.session.scalars(select(User.tenant_id).distinct())}
    job_tenants = {str(tenant) for tenant in await job.session.scalars(select(Job.tenant_id).distinct())}
    return {"user_tenants": sorted(user_tenants), "job_tenants": sorted(job_tenants)}


@job_kind("test.system_only")
async def system_only(job: JobContext) -> dict[str, Any]:
    return {}


class EndPayload(msgspec.Struct, forbid_unknown_fields=True):
    marker: str
    fail: bool = False
    refuse_end: bool = False


async def record_end(session: AsyncSession, job: Job, status: str) -> None:
    """The subject of a `test.ends` job: one audit row per status the job system gave it; raises if told to."""
    payload = msgspec.convert(job.payload, EndPayload)
    session.add(AuditEvent(actor="job", action=f"test.ended.{status}", target_id=payload.marker))
    await session.flush()
    if payload.refuse_end:
        raise RuntimeError("the subject refused the end")


@job_kind("test.ends", startable_by="user", payload_type=EndPayload, max_attempts=1, on_end=record_end)
async def end_with_subject(job: JobContext) -> dict[str, Any]:
    if msgspec.convert(job.payload, EndPayload).fail:
        raise RuntimeError("the work broke")
    return {}
