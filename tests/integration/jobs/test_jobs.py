"""Background jobs end to end: the API, a real SAQ worker on the real Redis, records in PostgreSQL under RLS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import msgspec
import pytest
from redis.asyncio import Redis
from saq import Worker
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.worker import create_worker
from app.observability.logging import configure_logging
from app.settings import Settings, settings_environment
from db.session import tenant_session
from db.tenant import AuditEvent, Job
from tests.support.clients import AuthHeaders, Client
from tests.support.commands import REPOSITORY_ROOT
from tests.support.job_handlers import checkpoint_counter_key
from tests.support.jobs import events_of, running_worker, submit, wait_for_status
from tests.support.tenants import TenantRows


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    for _ in range(int(within / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s: {what}")


def checkpoints_passed(redis: Redis, marker: str, at_least: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int(await redis.get(checkpoint_counter_key(marker)) or 0) >= at_least

    return check


async def effect_count(session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID, marker: str) -> int:
    async with tenant_session(session_maker, tenant_id) as session:
        count = await session.scalar(
            select(func.count()).where(AuditEvent.action == "test.effect", AuditEvent.target_id == marker)
        )
    return int(count or 0)


async def test_a_job_runs_once_and_its_record_tells_the_story(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "story", "steps": 2})
    assert (job["status"], job["attempts"], job["created_by"]) == ("queued", 0, str(tenant_a.user.id))
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded"
    assert (done["progress"], done["attempts"], done["result"]) == (100, 1, {"marker": "story", "attempt": 1})
    assert [event["event"] for event in done["events"]] == ["queued", "started", "succeeded"]
    assert done["started_at"] <= done["finished_at"]
    assert await effect_count(session_maker, tenant_a.id, "story") == 1


async def test_ten_concurrent_submissions_with_one_key_make_one_job_and_one_effect(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    body = {"kind": "test.effect", "payload": {"marker": "once"}, "idempotency_key": "import:2026-11-22"}
    responses = await asyncio.gather(*(client.post("/api/jobs", json=body, headers=headers) for _ in range(10)))
    assert sorted(response.status_code for response in responses) == [200] * 9 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    async with running_worker(settings):
        await wait_for_status(client, headers, responses[0].json()["id"], {"succeeded"})
        # Later submissions with the key still return the finished job; nothing runs again.
        again = await client.post("/api/jobs", json=body, headers=headers)
        assert (again.status_code, again.json()["id"], again.json()["status"]) == (
            200,
            responses[0].json()["id"],
            "succeeded",
        )
        await asyncio.sleep(0.5)
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).where(Job.kind == "test.effect")) == 1
    assert await effect_count(session_maker, tenant_a.id, "once") == 1


async def test_the_same_key_is_separate_per_kind_and_per_tenant(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    key = {"idempotency_key": "nightly"}
    first = await submit(client, auth_headers(tenant_a.user), "test.effect", payload={"marker": "x"}, **key)
    other_kind = await submit(client, auth_headers(tenant_a.user), "test.always_fails", **key)
    other_tenant = await submit(client, auth_headers(tenant_b.user), "test.effect", payload={"marker": "x"}, **key)
    assert len({first["id"], other_kind["id"], other_tenant["id"]}) == 3


async def test_cancel_stops_a_running_job_within_one_checkpoint(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    redis = Redis.from_url(settings.redis_url or "")
    counter = checkpoint_counter_key("long")
    job = await submit(
        client, headers, "test.effect", payload={"marker": "long", "steps": 10_000, "pause_seconds": 0.05}
    )
    async with running_worker(settings):
        await eventually(checkpoints_passed(redis, "long", 3), "the job passed 3 checkpoints")
        response = await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["cancel_requested_at"] is not None
        # Counted once the request is on record: the request itself may take longer than a step on a busy
        # machine, and the checkpoints passed while it was under way are not the job's to answer for.
        passed_before_cancel = int(await redis.get(counter) or 0)
        done = await wait_for_status(client, headers, job["id"], {"canceled", "succeeded", "failed", "dead"})
        passed_after_cancel = int(await redis.get(counter) or 0)
    await redis.aclose()
    assert done["status"] == "canceled"
    assert passed_after_cancel - passed_before_cancel <= 1
    assert done["finished_at"] is not None
    assert [event["event"] for event in done["events"]][-2:] == ["cancel_requested", "canceled"]
    assert await effect_count(session_maker, tenant_a.id, "long") == 0  # nothing of the stopped attempt landed


async def test_a_queued_job_is_canceled_at_once_and_never_runs(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "never"})
    response = await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
    assert (response.status_code, response.json()["status"]) == (202, "canceled")
    async with running_worker(settings):
        await asyncio.sleep(1.0)
    final = (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    assert (final["status"], final["attempts"]) == ("canceled", 0)
    assert await effect_count(session_maker, tenant_a.id, "never") == 0


async def test_a_job_that_always_fails_ends_dead_with_every_error_in_its_events(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.always_fails")
    assert job["max_attempts"] == settings.job_max_attempts == 3
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"dead", "succeeded", "failed"})
    assert (done["status"], done["attempts"]) == ("dead", 3)
    errors = [event["message"] for event in done["events"] if event["event"] in ("retrying", "dead")]
    assert errors == [f"RuntimeError: upstream exploded on attempt {attempt}" for attempt in (1, 2, 3)]
    assert [event["event"] for event in done["events"]][-1] == "dead"
    assert done["last_error"] == errors[-1]
    listed = await client.get("/api/jobs", params={"status": "dead"}, headers=headers)
    assert [row["id"] for row in listed.json()] == [job["id"]]


async def test_a_database_error_reaches_the_job_owner_without_its_statement(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.database_error")
    assert job["max_attempts"] == 1  # the kind's own limit wins over LYSS_JOB_MAX_ATTEMPTS
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"dead", "failed", "succeeded"})
    assert (done["status"], done["attempts"]) == ("dead", 1)
    assert done["last_error"] == "ProgrammingError: a database error (details in the worker's log)"
    assert "sk-do-not-show" not in str(done)
    assert "no_such_table" not in str(done)


async def test_a_failed_job_is_not_retried_automatically_but_can_be_retried_by_hand(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.fails_first")
    async with running_worker(settings):
        failed = await wait_for_status(client, headers, job["id"], {"failed", "succeeded", "dead"})
        expected_error = "JobFailed: the input was rejected"
        assert (failed["status"], failed["attempts"], failed["last_error"]) == ("failed", 1, expected_error)
        assert events_of(failed, "failed")[0]["message"] == expected_error
        retried = await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)
        assert (retried.status_code, retried.json()["status"]) == (202, "queued")
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "failed", "dead"})
    assert (done["status"], done["attempts"], done["result"]) == ("succeeded", 2, {"attempt": 2})
    assert [event["event"] for event in done["events"]] == [
        "queued",
        "started",
        "failed",
        "retry_requested",
        "started",
        "succeeded",
    ]


async def test_a_canceled_job_runs_again_when_retried(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "second-chance"})
    await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
    response = await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)
    assert response.status_code == 202
    assert response.json()["cancel_requested_at"] is None
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "canceled", "dead"})
    assert done["status"] == "succeeded"
    assert await effect_count(session_maker, tenant_a.id, "second-chance") == 1


@pytest.mark.slow  # a `lyss worker` process, started and killed
async def test_a_job_survives_its_worker_being_killed_and_its_effect_lands_once(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    redis = Redis.from_url(settings.redis_url or "")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        cwd=REPOSITORY_ROOT,
        env={**os.environ, **settings_environment(settings)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def worker_is_polling() -> bool:
            assert worker.returncode is None, "the worker process exited"
            return bool(await redis.keys("saq:lyss:worker_info:*"))

        await eventually(worker_is_polling, "the worker came up")
        job = await submit(
            client, headers, "test.effect", payload={"marker": "crash", "steps": 40, "pause_seconds": 0.05}
        )
        await eventually(checkpoints_passed(redis, "crash", 5), "the worker is in the middle of the job")
        worker.send_signal(signal.SIGKILL)  # mid-job: no shutdown, no cleanup, no acknowledgement
        assert await asyncio.wait_for(worker.wait(), 10) == -signal.SIGKILL
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    interrupted = (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    assert (interrupted["status"], interrupted["attempts"]) == ("running", 1)
    async with running_worker(settings):
        # SAQ's sweep notices the lost heartbeat and hands the job to this worker; or, when the killed
        # worker had already queued the minute's `jobs.recover`, recovery sends it again first.
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "dead", "failed"}, within=60)
    await redis.aclose()
    # Both may act (then the later attempt fences the earlier one out): two or three attempts, one effect.
    assert done["status"] == "succeeded"
    assert done["attempts"] in (2, 3), done["events"]
    started = events_of(done, "started")
    assert [event["attempt"] for event in started] == list(range(1, done["attempts"] + 1))
    # The record says why another attempt ran.
    swept = any(event["message"] == "The previous attempt's worker was lost; starting again." for event in started)
    recovered = any(
        event["message"] == "The queue had lost this job; it was sent again." for event in events_of(done, "requeued")
    )
    assert swept or recovered, done["events"]
    assert await effect_count(session_maker, tenant_a.id, "crash") == 1


async def test_stopping_a_worker_puts_its_running_job_back_and_another_worker_finishes_it(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    redis = Redis.from_url(settings.redis_url or "")
    job = await submit(
        client, headers, "test.effect", payload={"marker": "handover", "steps": 30, "pause_seconds": 0.05}
    )
    async with running_worker(settings):
        await eventually(checkpoints_passed(redis, "handover", 3), "the job passed 3 checkpoints")
    # The grace period is 0 in the tests: the attempt was cut short and put back, not failed.
    interrupted = (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    assert (interrupted["status"], events_of(interrupted, "interrupted")[0]["attempt"]) == ("queued", 1)
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "dead", "failed"})
    await redis.aclose()
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert await effect_count(session_maker, tenant_a.id, "handover") == 1


async def test_an_idle_worker_stops_at_once_whatever_its_grace_period(settings: Settings) -> None:
    worker = create_worker(
        msgspec.structs.replace(settings, worker_shutdown_grace_seconds=30), handle_signals=False, with_schedule=False
    )
    # Timed without the shutdown hook, run after: its last write of the usage log takes as long as there is
    # to write (other tests' records, on a loaded machine up to its bound of ten seconds).
    shutdown = worker.shutdown
    assert callable(shutdown)
    worker.shutdown = None
    task = asyncio.create_task(worker.start())
    await eventually(lambda: _started(worker), "the worker started its loops")
    stopping = time.monotonic()
    worker.event.set()
    await asyncio.wait_for(task, 60)
    stopped = time.monotonic() - stopping
    await shutdown(worker.context)
    # It waited out its upkeep timers' interval (ten seconds) before: a Ctrl-C or a deploy waited as long.
    assert stopped < 5


async def _started(worker: Worker[Any]) -> bool:
    return len(worker.tasks) > worker.concurrency


async def test_tenant_b_cannot_read_cancel_retry_or_follow_tenant_a_jobs(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    a_headers = auth_headers(tenant_a.user)
    job = await submit(client, a_headers, "test.effect", payload={"marker": "private"})
    before = (await client.get(f"/api/jobs/{job['id']}", headers=a_headers)).json()
    for headers in (auth_headers(tenant_b.user), auth_headers(tenant_b.admin)):
        assert (await client.get(f"/api/jobs/{job['id']}", headers=headers)).status_code == 404
        assert (await client.get(f"/api/jobs/{job['id']}/events", headers=headers)).status_code == 404
        assert (await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)).status_code == 404
        assert (await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)).status_code == 404
        assert job["id"] not in [row["id"] for row in (await client.get("/api/jobs", headers=headers)).json()]
    assert (await client.get(f"/api/jobs/{job['id']}", headers=a_headers)).json() == before


async def test_users_see_their_own_jobs_and_admins_every_job_of_the_tenant(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    mine = await submit(client, auth_headers(tenant_a.user), "test.effect", payload={"marker": "u"})
    admins = await submit(client, auth_headers(tenant_a.admin), "test.effect", payload={"marker": "a"})
    user_view = (await client.get("/api/jobs", headers=auth_headers(tenant_a.user))).json()
    admin_view = (await client.get("/api/jobs", headers=auth_headers(tenant_a.admin))).json()
    assert [row["id"] for row in user_view] == [mine["id"]]
    assert {mine["id"], admins["id"], str(tenant_a.job.id)} == {row["id"] for row in admin_view}
    response = await client.get(f"/api/jobs/{admins['id']}", headers=auth_headers(tenant_a.user))
    assert response.status_code == 404
    response = await client.post(f"/api/jobs/{admins['id']}/cancel", headers=auth_headers(tenant_a.user))
    assert response.status_code == 404
    # The admin may act on the user's job.
    response = await client.post(f"/api/jobs/{mine['id']}/cancel", headers=auth_headers(tenant_a.admin))
    assert (response.status_code, response.json()["status"]) == (202, "canceled")


async def test_a_job_sees_only_its_own_tenant_rows(
    client: Client, settings: Settings, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    await submit(client, auth_headers(tenant_b.user), "test.effect", payload={"marker": "b-job"})
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.snoop")
    async with running_worker(settings):
        done = await wait_for_status(client, headers, job["id"], {"succeeded", "failed", "dead"})
    assert done["result"] == {"user_tenants": [str(tenant_a.id)], "job_tenants": [str(tenant_a.id)]}


async def test_following_a_job_streams_its_events_until_it_ends(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "sse", "steps": 3, "pause_seconds": 0.05})
    received: list[tuple[str, dict[str, Any]]] = []
    async with (
        running_worker(settings),
        client.stream("GET", f"/api/jobs/{job['id']}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                received.append((name, msgspec.json.decode(line.removeprefix("data:").strip())))
    assert [data["event"] for name, data in received if name == "job_event"] == ["queued", "started", "succeeded"]
    assert received[-1] == ("end", {"status": "succeeded", "progress": 100})


# --- bad input: a clear 4xx and the record unchanged -----------------------------------------------


async def test_cancelling_a_finished_job_is_a_conflict_and_changes_nothing(
    client: Client, settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "done"})
    async with running_worker(settings):
        await wait_for_status(client, headers, job["id"], {"succeeded"})
    before = (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    response = await client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
    assert response.status_code == 409
    assert "already finished (succeeded)" in response.json()["detail"]
    assert (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json() == before
    response = await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)
    assert response.status_code == 409
    assert (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json() == before


async def test_retrying_a_queued_or_running_job_is_a_conflict_and_changes_nothing(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "busy"})
    before = (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    response = await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)
    assert (response.status_code, "this one is queued" in response.json()["detail"]) == (409, True)
    assert (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json() == before
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Job).where(Job.id == UUID(job["id"])).values(status="running"))
        await session.commit()
    response = await client.post(f"/api/jobs/{job['id']}/retry", headers=headers)
    assert (response.status_code, "this one is running" in response.json()["detail"]) == (409, True)
    assert (await client.get(f"/api/jobs/{job['id']}", headers=headers)).json()["status"] == "running"


@pytest.mark.parametrize("path", ["", "/events", "/cancel", "/retry"])
async def test_an_unknown_job_is_not_found(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, path: str
) -> None:
    method = client.post if path in ("/cancel", "/retry") else client.get
    response = await method(
        f"/api/jobs/0190a000-0000-7000-8000-000000000000{path}", headers=auth_headers(tenant_a.user)
    )
    assert (response.status_code, response.json()["detail"]) == (404, "No such job.")
    response = await method(f"/api/jobs/not-a-uuid{path}", headers=auth_headers(tenant_a.user))
    assert response.status_code in (400, 404)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"kind": "test.effect", "payload": {"marker": "m"}, "idempotency_key": "has space"}, 400, "idempotency_key"),
        ({"kind": "test.effect", "payload": {"marker": "m"}, "idempotency_key": ""}, 400, "idempotency_key"),
        ({"kind": "test.effect", "payload": {"marker": "m"}, "idempotency_key": "k" * 201}, 400, "idempotency_key"),
        ({"kind": "test.effect", "payload": {"marker": "m"}, "idempotency_key": 7}, 400, "idempotency_key"),
        ({"kind": "no.such.kind"}, 400, "Unknown job kind 'no.such.kind'"),
        ({"kind": "test.effect", "payload": {"marker": 5}}, 400, "payload: Expected `str`"),
        ({"kind": "test.effect", "payload": {"marker": "m", "extra": 1}}, 400, "payload: Object contains unknown"),
        ({"kind": "test.always_fails", "payload": {"x": 1}}, 400, "takes no payload"),
        ({"kind": "test.system_only"}, 403, "cannot be started by you"),
        ({"kind": "gateway.test_channels"}, 403, "cannot be started by you"),
        ({"payload": {}}, 400, "kind"),
    ],
)
async def test_bad_submissions_are_refused_and_create_nothing(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    body: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    response = await client.post("/api/jobs", json=body, headers=auth_headers(tenant_a.user))
    assert response.status_code == status, response.text
    assert detail in response.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1  # the fixture's job only


async def test_metrics_report_queue_depth_jobs_by_status_and_stuck_jobs(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.user)
    await submit(client, headers, "test.effect", payload={"marker": "m1"})
    await submit(client, headers, "test.effect", payload={"marker": "m2"})
    stuck = await submit(client, headers, "test.always_fails")
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(Job)
            .where(Job.id == UUID(stuck["id"]))
            .values(status="running", timeout_seconds=1, started_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 1))
        )
        await session.commit()
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    assert 'lyss_job_queue_depth{state="waiting"} 3.0' in lines  # three messages, no worker yet
    assert 'lyss_jobs{kind="test.effect",status="queued"} 2.0' in lines
    assert 'lyss_jobs{kind="fixture.finished",status="succeeded"} 1.0' in lines
    assert 'lyss_jobs_stuck{kind="test.always_fails"} 1.0' in lines
    assert 'lyss_jobs_stuck{kind="test.effect"} 0.0' in lines


async def test_a_handlers_log_lines_name_the_job_and_its_tenant(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    headers = auth_headers(tenant_a.user)
    job = await submit(client, headers, "test.effect", payload={"marker": "logged"})
    async with running_worker(settings):
        await wait_for_status(client, headers, job["id"], {"succeeded", "failed", "dead"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (recorded,) = [line for line in lines if line.get("event") == "effect recorded"]
    assert (recorded["job_id"], recorded["tenant_id"], recorded["marker"]) == (job["id"], str(tenant_a.id), "logged")
