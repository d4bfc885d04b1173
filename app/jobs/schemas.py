"""Request and response bodies of the jobs API."""

from __future__ import annotations

import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from app.schemas import Input, read_as

# The statuses a job goes through, as the table constrains them: re-exported for callers above the models.
from db.tenant import JOB_STATUSES as JOB_STATUSES
from db.tenant import JOB_TERMINAL_STATUSES as JOB_TERMINAL_STATUSES
from db.tenant import Job, JobEvent
from db.tenant import JobStatus as JobStatus


class JobSubmit(Input):
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    payload: dict[str, Any] = {}
    # Letters, digits, '.', '_', ':' and '-' (checked by the service, which names the rule in its error).
    idempotency_key: str | None = None


class JobRead(msgspec.Struct):
    id: UUID
    kind: str
    status: str
    progress: int
    attempts: int
    max_attempts: int
    idempotency_key: str | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    last_error: str | None
    created_by: UUID | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    cancel_requested_at: datetime.datetime | None


class JobEventRead(msgspec.Struct):
    id: UUID
    event: str
    attempt: int
    message: str | None
    data: dict[str, Any]
    created_at: datetime.datetime


class JobDetail(JobRead):
    events: list[JobEventRead] = []


def job_read(job: Job) -> JobRead:
    return read_as(JobRead, job)


def job_detail(job: Job, events: list[JobEvent]) -> JobDetail:
    return read_as(JobDetail, job, events=[event_read(event) for event in events])


def event_read(event: JobEvent) -> JobEventRead:
    return read_as(JobEventRead, event)
