"""Ingestion of knowledge base documents as durable jobs: a real worker, the mock provider as the embedder."""

from __future__ import annotations

import asyncio
import io
import math
import os
import signal
import sys
import time
from typing import Any
from uuid import UUID

import docx
import pytest
from fpdf import FPDF
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy import String, cast, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings, settings_environment
from db.knowledge import KnowledgeChunk
from db.provider import UsageLog
from db.session import tenant_session
from db.tenant import Job
from tests.support.clients import AuthHeaders, Client
from tests.support.commands import REPOSITORY_ROOT
from tests.support.gateway import add_channel
from tests.support.jobs import running_worker, wait_for_status
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows, audit_actions

BASES = "/api/knowledge-bases"
EMBEDDER = "kb-embedder"
CHANNEL = "kb-embed"
BATCH = 64
TERMINAL = {"ready", "failed", "canceled"}


def markdown(paragraphs: int) -> bytes:
    """A handbook of distinct paragraphs under a few headings: about two to a passage at 64 tokens."""
    lines = ["# Handbook", ""]
    for index in range(paragraphs):
        if index % 20 == 0:
            lines += [f"## Chapter {index // 20}", ""]
        lines += [
            f"Rule {index} says the office keeps drawer {index} locked, and only keeper {index} holds its key; "
            f"ask keeper {index} before you open it.",
            "",
        ]
    return "\n".join(lines).encode()


def word_document() -> bytes:
    document = docx.Document()
    document.add_heading("Travel policy", level=1)
    for index in range(5):
        document.add_paragraph(f"Trip rule {index}: book trains before planes, and keep receipt {index}.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_document() -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in range(2):
        pdf.add_page()
        for line in range(6):
            pdf.cell(
                0, 10, f"Page {page + 1} line {line}: parking is free for bicycles.", new_x="LMARGIN", new_y="NEXT"
            )
    return bytes(pdf.output())


def scanned_pdf() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(image, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(io.BytesIO(image.getvalue()), x=10, y=10, w=100)
    return bytes(pdf.output())


async def setup_base(
    client: Client, upstream: MockUpstream, admin: dict[str, str], owner: dict[str, str], **fields: Any
) -> dict[str, Any]:
    upstream.behave(CHANNEL, dimensions=64)
    await add_channel(client, admin, upstream, CHANNEL, models=[EMBEDDER])
    response = await client.post(
        BASES,
        json={"name": "Handbook", "embedding_model": EMBEDDER, "chunk_tokens": 64, "chunk_overlap": 0, **fields},
        headers=owner,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def upload(client: Client, headers: dict[str, str], base_id: str, name: str, content: bytes) -> Any:
    return await client.post(f"{BASES}/{base_id}/documents", files={"file": (name, content)}, headers=headers)


async def uploaded(client: Client, headers: dict[str, str], base_id: str, name: str, content: bytes) -> dict[str, Any]:
    response = await upload(client, headers, base_id, name, content)
    assert response.status_code == 201, response.text
    document = dict(response.json())
    assert (document["status"], document["job_id"] is not None) == ("queued", True)
    return document


async def document_of(client: Client, headers: dict[str, str], document: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"{BASES}/{document['base_id']}/documents/{document['id']}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_for_document(
    client: Client, headers: dict[str, str], document: dict[str, Any], statuses: set[str], within: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        current = await document_of(client, headers, document)
        if current["status"] in statuses:
            return current
        assert time.monotonic() < deadline, f"document still {current['status']}"
        await asyncio.sleep(0.05)


class ChunkCounts:
    def __init__(self, rows: list[Any]) -> None:
        self.sections = [row for row in rows if row.level == "section"]
        self.passages = [row for row in rows if row.level == "passage"]
        self.embedded = [row for row in self.passages if row.embedding_dim is not None]


async def chunks_of(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, document_id: str
) -> ChunkCounts:
    async with tenant_session(session_maker, tenant.id) as session:
        rows = (
            await session.execute(
                select(
                    KnowledgeChunk.id,
                    KnowledgeChunk.level,
                    KnowledgeChunk.position,
                    KnowledgeChunk.parent_id,
                    KnowledgeChunk.embedding_dim,
                    KnowledgeChunk.embedding_model,
                    cast(KnowledgeChunk.language, String).label("language"),
                ).where(KnowledgeChunk.document_id == UUID(document_id))
            )
        ).all()
    return ChunkCounts(list(rows))


async def embedding_usage(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> list[UsageLog]:
    async with tenant_session(session_maker, tenant.id) as session:
        return list(await session.scalars(select(UsageLog).where(UsageLog.endpoint == "embeddings")))


async def settled_usage(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, expected: int
) -> list[UsageLog]:
    """The embedding usage rows once the flusher wrote `expected` (then a moment more, for any extra); the
    flusher passes every half second, but a loaded machine has made it take over ten."""
    deadline = time.monotonic() + 30
    while len(await embedding_usage(session_maker, tenant)) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    return await embedding_usage(session_maker, tenant)


async def ingest_jobs(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> list[Job]:
    async with tenant_session(session_maker, tenant.id) as session:
        return list(await session.scalars(select(Job).where(Job.kind == "knowledge.ingest")))


def assert_well_formed(counts: ChunkCounts, document: dict[str, Any], model: str, dimensions: int) -> None:
    assert document["chunk_count"] == len(counts.sections) + len(counts.passages)
    assert counts.passages
    assert counts.sections
    assert sorted(row.position for row in counts.passages) == list(range(len(counts.passages)))
    assert sorted(row.position for row in counts.sections) == list(range(len(counts.sections)))
    section_ids = {row.id for row in counts.sections}
    assert all(row.parent_id in section_ids for row in counts.passages)
    assert all(row.parent_id is None and row.embedding_dim is None for row in counts.sections)
    assert {(row.embedding_dim, row.embedding_model) for row in counts.passages} == {(dimensions, model)}
    assert {row.language for row in counts.passages} == {"english"}


async def test_markdown_docx_and_pdf_are_ingested_and_billed_to_the_right_user(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    # The user's base: its owner pays, even for what an administrator uploads into it.
    own = await setup_base(client, upstream, admin, user)
    # The organization's base has no one owner: whoever uploads pays.
    shared = (
        await client.post(
            BASES,
            json={
                "name": "Shared",
                "embedding_model": EMBEDDER,
                "scope": "tenant",
                "chunk_tokens": 64,
                "chunk_overlap": 0,
            },
            headers=admin,
        )
    ).json()
    documents = [
        (await uploaded(client, user, own["id"], "handbook.md", markdown(200)), tenant_a.user.id),
        (await uploaded(client, admin, own["id"], "travel.docx", word_document()), tenant_a.user.id),
        (await uploaded(client, admin, shared["id"], "parking.pdf", pdf_document()), tenant_a.admin.id),
    ]
    async with running_worker(settings):
        done = [await wait_for_document(client, admin, document, TERMINAL) for document, _ in documents]
    expected_calls = 0
    billed: dict[UUID, int] = {}
    for (document, payer), finished in zip(documents, done, strict=True):
        assert (finished["status"], finished["error"], finished["embedding_model"]) == ("ready", None, EMBEDDER)
        counts = await chunks_of(session_maker, tenant_a, document["id"])
        assert_well_formed(counts, finished, EMBEDDER, 64)
        batches = math.ceil(len(counts.passages) / BATCH)
        expected_calls += batches
        billed[payer] = billed.get(payer, 0) + batches
    assert done[2]["pages"] == 2
    assert len((await chunks_of(session_maker, tenant_a, documents[0][0]["id"])).passages) > BATCH
    usage = await settled_usage(session_maker, tenant_a, expected_calls)
    assert upstream.calls[CHANNEL] == expected_calls == len(usage)
    assert {payer: sum(1 for row in usage if row.user_id == payer) for payer in billed} == billed
    job = (await client.get(f"/api/jobs/{done[0]['job_id']}", headers=user)).json()
    messages = [event["message"] for event in job["events"] if event["event"] == "progress"]
    assert "Chunks written." in messages
    assert sum(1 for message in messages if message and message.startswith("Embedded ")) == 2


async def test_the_same_file_twice_is_one_document_and_one_job_and_a_scan_fails_with_the_reason(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    first = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    again = await upload(client, user, base["id"], "copy.md", markdown(3))
    assert (again.status_code, again.json()["id"], again.json()["job_id"]) == (200, first["id"], first["job_id"])
    scan = await uploaded(client, user, base["id"], "scan.pdf", scanned_pdf())
    async with running_worker(settings):
        ready = await wait_for_document(client, user, first, TERMINAL)
        failed = await wait_for_document(client, user, scan, TERMINAL)
        # Asking again with nothing changed is the same job: nothing runs, nothing is paid again.
        reindexed = await client.post(f"{BASES}/{base['id']}/documents/{first['id']}/reindex", headers=user)
        assert (reindexed.status_code, reindexed.json()["job_id"]) == (202, first["job_id"])
        await asyncio.sleep(0.5)
    assert ready["status"] == "ready"
    assert failed["status"] == "failed"
    assert failed["error"].startswith("No text was found in this PDF: it looks like a scanned document")
    assert (await chunks_of(session_maker, tenant_a, scan["id"])).passages == []
    scan_job = (await client.get(f"/api/jobs/{scan['job_id']}", headers=user)).json()
    assert (scan_job["status"], scan_job["attempts"]) == ("failed", 1)
    assert len(await ingest_jobs(session_maker, tenant_a)) == 2
    assert upstream.calls[CHANNEL] == 1
    assert (await document_of(client, user, first))["status"] == "ready"
    assert "knowledge.document_reindexed" in await audit_actions(session_maker, tenant_a.id)


async def test_a_cancel_stops_ingestion_within_a_batch_and_a_retry_finishes_it(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    upstream.behave(CHANNEL, dimensions=64, hang_seconds=0.4)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(600))
    async with running_worker(settings):
        deadline = time.monotonic() + 30
        while not (await chunks_of(session_maker, tenant_a, document["id"])).embedded:
            assert time.monotonic() < deadline, "no batch was embedded"
            await asyncio.sleep(0.05)
        canceled = await client.post(f"/api/jobs/{document['job_id']}/cancel", headers=user)
        assert canceled.status_code == 202, canceled.text
        calls_at_cancel = upstream.calls[CHANNEL]
        stopped = await wait_for_document(client, user, document, TERMINAL, within=5)
        await asyncio.sleep(1.0)
        assert stopped["status"] == "canceled"
        assert upstream.calls[CHANNEL] <= calls_at_cancel + 1
        counts = await chunks_of(session_maker, tenant_a, document["id"])
        assert 0 < len(counts.embedded) < len(counts.passages)
        job = await wait_for_status(client, user, document["job_id"], {"canceled"})
        assert job["status"] == "canceled"

        upstream.behave(CHANNEL, dimensions=64)
        calls_before_retry = upstream.calls[CHANNEL]
        retried = await client.post(f"/api/jobs/{document['job_id']}/retry", headers=user)
        assert retried.status_code == 202, retried.text
        rerun = await wait_for_status(client, user, document["job_id"], {"succeeded", "failed", "dead"})
        assert rerun["status"] == "succeeded"
        finished = await document_of(client, user, document)
    assert finished["status"] == "ready"
    after = await chunks_of(session_maker, tenant_a, document["id"])
    assert_well_formed(after, finished, EMBEDDER, 64)
    # The retry embedded only what the canceled run had not.
    assert upstream.calls[CHANNEL] - calls_before_retry == math.ceil(
        (len(counts.passages) - len(counts.embedded)) / BATCH
    )


@pytest.mark.slow  # a `lyss worker` process, started and killed
async def test_a_worker_killed_mid_ingestion_leaves_one_set_of_chunks_and_no_batch_paid_twice(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    upstream.behave(CHANNEL, dimensions=64, hang_seconds=1.0)
    redis = Redis.from_url(settings.redis_url or "")
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(400))
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
        deadline = time.monotonic() + 60
        # The first batch's vectors are stored and the second batch's call is under way (the mock holds it).
        while not (
            (await chunks_of(session_maker, tenant_a, document["id"])).embedded and upstream.calls[CHANNEL] >= 2
        ):
            assert worker.returncode is None, "the worker process exited"
            assert time.monotonic() < deadline, "the worker did not embed a batch"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(worker.wait(), 10) == -signal.SIGKILL
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    interrupted = await chunks_of(session_maker, tenant_a, document["id"])
    assert len(interrupted.embedded) == BATCH
    assert (await document_of(client, user, document))["status"] == "running"
    upstream.behave(CHANNEL, dimensions=64)
    async with running_worker(settings):
        # SAQ's sweep (or the minute's recovery) hands the job, whose worker is gone, to this worker.
        finished = await wait_for_document(client, user, document, TERMINAL, within=90)
    await redis.aclose()
    assert finished["status"] == "ready"
    counts = await chunks_of(session_maker, tenant_a, document["id"])
    assert_well_formed(counts, finished, EMBEDDER, 64)
    batches = math.ceil(len(counts.passages) / BATCH)
    # Every batch paid once; the one call cut by the kill was never settled, so never paid.
    usage = await settled_usage(session_maker, tenant_a, batches)
    assert len(usage) == batches
    assert upstream.calls[CHANNEL] == batches + 1
    job = (await client.get(f"/api/jobs/{document['job_id']}", headers=user)).json()
    assert (job["status"], job["attempts"] >= 2) == ("succeeded", True)


async def test_changing_the_embedding_model_re_embeds_every_document_with_the_new_one(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    upstream.behave("kb-embed-new", dimensions=32)
    await add_channel(client, admin, upstream, "kb-embed-new", models=["kb-embedder-new"])
    documents = [
        await uploaded(client, user, base["id"], "handbook.md", markdown(140)),
        await uploaded(client, user, base["id"], "travel.docx", word_document()),
    ]
    async with running_worker(settings):
        before = [await wait_for_document(client, user, document, TERMINAL) for document in documents]
        assert [document["status"] for document in before] == ["ready", "ready"]
        chunk_ids = {row.id for row in (await chunks_of(session_maker, tenant_a, documents[0]["id"])).passages}
        changed = await client.patch(f"{BASES}/{base['id']}", json={"embedding_model": "kb-embedder-new"}, headers=user)
        assert changed.status_code == 200, changed.text
        after = [await wait_for_document(client, user, document, {"ready"}) for document in documents]
        for document, finished in zip(documents, after, strict=True):
            assert finished["job_id"] != document["job_id"]
            assert finished["embedding_model"] == "kb-embedder-new"
            assert_well_formed(
                await chunks_of(session_maker, tenant_a, document["id"]), finished, "kb-embedder-new", 32
            )
        # The chunking did not change: the same chunks, only their vectors recomputed.
        assert {row.id for row in (await chunks_of(session_maker, tenant_a, documents[0]["id"])).passages} == chunk_ids
        # A re-index of the whole base now has nothing to do: the same jobs, no call.
        calls = upstream.calls["kb-embed-new"]
        again = await client.post(f"{BASES}/{base['id']}/reindex", headers=user)
        assert again.status_code == 202, again.text
        assert {row["job_id"] for row in again.json()} == {row["job_id"] for row in after}
        await asyncio.sleep(0.5)
    passages = [len((await chunks_of(session_maker, tenant_a, document["id"])).passages) for document in documents]
    assert upstream.calls["kb-embed-new"] == calls == sum(math.ceil(count / BATCH) for count in passages)
    actions = await audit_actions(session_maker, tenant_a.id)
    assert actions.count("knowledge.base_reindexed") == 2
    # Reaching another user's base or another tenant's is refused without a trace.
    outsider = auth_headers(tenant_b.admin)
    for path in (f"{BASES}/{base['id']}/reindex", f"{BASES}/{base['id']}/documents/{documents[0]['id']}/reindex"):
        assert (await client.post(path, headers=outsider)).status_code == 404


async def test_a_document_whose_job_ended_before_it_ran_says_so_and_a_reindex_brings_it_back(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    """Canceled while still queued, the job never runs: the document must not stay `queued` for ever."""
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    canceled = await client.post(f"/api/jobs/{document['job_id']}/cancel", headers=user)
    assert canceled.status_code == 202, canceled.text
    shown = await document_of(client, user, document)
    assert shown["status"] == "canceled"
    assert "re-index" in shown["error"]
    listed = await client.get(f"{BASES}/{base['id']}/documents", headers=user)
    assert [item["status"] for item in listed.json()] == ["canceled"]

    again = await client.post(f"{BASES}/{base['id']}/documents/{document['id']}/reindex", headers=user)
    assert again.status_code == 202, again.text
    async with running_worker(settings):
        ready = await wait_for_document(client, user, document, TERMINAL)
    assert ready["status"] == "ready"
