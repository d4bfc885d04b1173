"""Jobs from the outside: a real SAQ worker in the test's event loop, submitting, and waiting for an outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from saq import Worker

from app.jobs.worker import create_worker
from app.settings import Settings
from tests.support.clients import Client


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker[Any]]:
    """A real SAQ worker in this event loop (no cron: the scheduled tasks are tested by calling them)."""
    worker = create_worker(settings, handle_signals=False, with_schedule=False)
    task = asyncio.create_task(worker.start())
    try:
        yield worker
    finally:
        worker.event.set()
        await asyncio.wait_for(task, 30)


async def submit(client: Client, headers: dict[str, str], kind: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"kind": kind, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def wait_for_status(
    client: Client, headers: dict[str, str], job_id: str, statuses: set[str], within: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/api/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job = dict(response.json())
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['events']}"
        await asyncio.sleep(0.05)


def events_of(job: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [event for event in job["events"] if event["event"] == name]
