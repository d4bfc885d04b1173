"""The ingestion job of a knowledge base's document: download, extract, chunk, embed in batches, mark ready.

Unlike most jobs, each step commits on its own (the chunks, then each batch of vectors with the mark that it
is done), so an attempt cut short by a crash leaves its finished work behind and the next attempt goes on from
there: it writes the same chunks again as upserts and embeds only passages that have no vector yet. Every
write is fenced: it lands only while this attempt owns the job record and the document names this job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import case, cast, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.client import EmbeddingRejected, GatewayRefused, chat_token, embed
from app.jobs.registry import JobCanceled, JobContext, JobFailed, job_kind
from app.jobs.worker import describe_error
from app.knowledge import search_cache
from app.knowledge.chunking import Chunk, chunk
from app.knowledge.extract import ExtractionError, extract
from app.knowledge.services import INGEST_JOB_KIND
from app.schemas import Input
from app.storage.base import StorageError
from db.auth import User
from db.knowledge import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from db.session import tenant_session
from db.tenant import Job

# Passages per embedding call: one call is one usage record and one transaction of vectors.
EMBED_BATCH = 64
# Chunk rows per INSERT statement (PostgreSQL takes at most 32767 parameters in one).
WRITE_BATCH = 500
CANCELED_ERROR = "The ingestion job was canceled before it finished; re-index the document to try again."


class IngestPayload(Input):
    document_id: UUID


class _Superseded(JobCanceled):
    """Another job (a re-index) or another attempt took the document over: this attempt stops writing."""


class _Plan(msgspec.Struct, frozen=True):
    base_id: UUID
    filename: str
    content_type: str
    object_key: str
    embedding_model: str
    chunk_tokens: int
    chunk_overlap: int
    language: str
    billed_user_id: UUID


async def document_follows_job(session: AsyncSession, job: Job, status: str) -> None:
    """The document's status where the job system ends its ingestion (or starts it again), written only while
    the document is bound to this job (a re-index binds it to a new one) and not already ready."""
    bound = (KnowledgeDocument.id == UUID(job.payload["document_id"])) & (KnowledgeDocument.job_id == job.id)
    if status == "queued":
        statement = update(KnowledgeDocument).where(bound, KnowledgeDocument.status != "ready")
        await session.execute(statement.values(status="queued", error=None))
        return
    if status == "canceled":
        outcome, error = "canceled", CANCELED_ERROR
    else:
        reason = (job.last_error or "no attempt finished").rstrip(".")
        outcome, error = "failed", f"The ingestion failed ({reason}); re-index the document to try again."
    # A document the handler already marked (a `JobFailed` with its reason) keeps what it says.
    statement = update(KnowledgeDocument).where(bound, KnowledgeDocument.status.in_(("queued", "running")))
    await session.execute(statement.values(status=outcome, error=error))


@job_kind(INGEST_JOB_KIND, payload_type=IngestPayload, timeout_seconds=3600, on_end=document_follows_job)
async def ingest_document(job: JobContext) -> dict[str, Any]:
    """Ingest one document: `running` while it runs, `ready` with the job's success, `failed` with the reason
    the handler knows; every other end of the job is written by `document_follows_job`."""
    document_id = msgspec.convert(job.payload, IngestPayload).document_id
    try:
        return await _ingest(job, document_id)
    except JobCanceled:  # _Superseded included: the job's end is written with its status
        raise
    except JobFailed as failure:
        await _set_status(job, document_id, "failed", str(failure))
        raise
    except (Exception, asyncio.CancelledError) as error:
        # The job system runs it again (a retry, or a shutdown that puts it back) or ends it (the last attempt,
        # a cancel), and then `document_follows_job` says so.
        with contextlib.suppress(Exception):
            reason = None if isinstance(error, asyncio.CancelledError) else describe_error(error)
            await _set_status(job, document_id, "queued", reason)
        raise


async def _ingest(job: JobContext, document_id: UUID) -> dict[str, Any]:
    plan = await _claim(job, document_id)
    if plan is None:
        return {"skipped": "the document was deleted"}
    await job.progress(5, "Started.")
    try:
        data = await job.services.objects.read(job.tenant_id, plan.object_key)
    except StorageError as error:
        if not await _stored(job, plan.object_key):
            raise JobFailed("The document's file is missing from the object store.") from None
        raise RuntimeError(error.detail) from None
    await job.progress(10, f"Downloaded {len(data)} bytes.")
    try:
        extracted = await asyncio.to_thread(extract, data, filename=plan.filename, content_type=plan.content_type)
    except ExtractionError as error:
        raise JobFailed(str(error)) from None
    chunks = chunk(extracted.blocks, chunk_tokens=plan.chunk_tokens, overlap_tokens=plan.chunk_overlap)
    passages = sum(1 for piece in chunks if piece.level == "passage")
    await job.progress(
        20, f"Extracted the text and cut it into {len(chunks) - passages} sections and {passages} passages."
    )
    await job.checkpoint()
    async with _owned(job, document_id) as session:
        await _write_chunks(session, job.tenant_id, document_id, plan, chunks)
    await job.progress(30, "Chunks written.")
    embedded = await _embed_passages(job, document_id, plan, passages)
    session = job.session
    # The mark `ready` commits with the job's success (and only if this attempt still owns the record).
    await _check_owner(session, job, document_id)
    chunk_count = await session.scalar(
        select(func.count()).select_from(KnowledgeChunk).where(KnowledgeChunk.document_id == document_id)
    )
    await session.execute(
        update(KnowledgeDocument)
        .where(KnowledgeDocument.id == document_id)
        .values(
            status="ready",
            error=None,
            chunk_count=chunk_count or 0,
            pages=extracted.pages,
            embedding_model=plan.embedding_model,
        )
    )
    job.after_success(lambda: search_cache.changed(job.services.redis, job.tenant_id, [plan.base_id]))
    return {"chunks": chunk_count or 0, "passages": passages, "embedded": embedded, "pages": extracted.pages}


async def _claim(job: JobContext, document_id: UUID) -> _Plan | None:
    """Mark the document `running` and read what the ingestion needs; None if it is gone, _Superseded if a
    newer job owns it."""
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        document = await session.get(KnowledgeDocument, document_id, with_for_update=True)
        if document is None:
            await session.rollback()
            return None
        await _check_job(session, job)
        if document.job_id != job.job_id:
            # A newer ingestion owns the document (an old job retried by hand): this one must not take it back.
            await session.rollback()
            raise _Superseded
        base = await session.get_one(KnowledgeBase, document.base_id)
        billed = await _billed_user(session, job, base, document)
        document.status = "running"
        document.error = None
        plan = _Plan(
            base_id=base.id,
            filename=document.filename,
            content_type=document.content_type,
            object_key=document.object_key,
            embedding_model=base.embedding_model,
            chunk_tokens=base.chunk_tokens,
            chunk_overlap=base.chunk_overlap,
            language=base.language,
            billed_user_id=billed,
        )
        await session.commit()
    return plan


async def _billed_user(
    session: AsyncSession, job: JobContext, base: KnowledgeBase, document: KnowledgeDocument
) -> UUID:
    """Who pays for the embeddings: a user's base its owner; a group's or the organization's base has no one
    owner, so the person who uploaded the document (their key, and through it the group's and organization's
    budgets), or, when that account is gone, the person who asked for this ingestion."""
    candidates = [base.owner_user_id] if base.scope == "user" else [document.created_by, job.actor_user_id]
    for user_id in candidates:
        if user_id is not None and await session.get(User, user_id) is not None:
            return user_id
    raise JobFailed("Nobody can be billed for the embeddings: the document's uploader no longer exists.")


async def _check_job(session: AsyncSession, job: JobContext) -> None:
    owned = (
        await session.execute(
            select(Job.cancel_requested_at)
            .where(Job.id == job.job_id, Job.attempts == job.attempt, Job.status == "running")
            .with_for_update(read=True)
        )
    ).first()
    if owned is None:
        raise _Superseded
    if owned.cancel_requested_at is not None:
        raise JobCanceled


async def _check_owner(session: AsyncSession, job: JobContext, document_id: UUID) -> None:
    await _check_job(session, job)
    owner = await session.scalar(
        select(KnowledgeDocument.job_id).where(KnowledgeDocument.id == document_id).with_for_update()
    )
    if owner != job.job_id:
        raise _Superseded


@contextlib.asynccontextmanager
async def _owned(job: JobContext, document_id: UUID) -> AsyncIterator[AsyncSession]:
    """A transaction that commits only while this attempt owns the job and the document."""
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        await _check_owner(session, job, document_id)
        yield session
        await session.commit()


def _row(tenant_id: UUID, document_id: UUID, plan: _Plan, piece: Chunk, parent_id: UUID | None) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "base_id": plan.base_id,
        "document_id": document_id,
        "parent_id": parent_id,
        "level": piece.level,
        "position": piece.position,
        "page": piece.page,
        "section": piece.section,
        "start_offset": piece.start_offset,
        "end_offset": piece.end_offset,
        "text": piece.text,
        "token_count": piece.token_count,
        "content_hash": piece.content_hash,
        "language": cast(literal(plan.language), REGCONFIG),
    }


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[int, UUID]:
    """Insert or update chunks by (document, level, position); a chunk whose text changed loses its vector."""
    insert = pg_insert(KnowledgeChunk).values(rows)
    changed = KnowledgeChunk.content_hash != insert.excluded.content_hash
    statement = insert.on_conflict_do_update(
        constraint="uk_kb_chunks_document_position",
        set_={
            **{
                name: insert.excluded[name]
                for name in (
                    "parent_id",
                    "page",
                    "section",
                    "start_offset",
                    "end_offset",
                    "text",
                    "token_count",
                    "content_hash",
                    "language",
                )
            },
            "embedding": case((changed, None), else_=KnowledgeChunk.embedding),
            "embedding_dim": case((changed, None), else_=KnowledgeChunk.embedding_dim),
            "embedding_model": case((changed, None), else_=KnowledgeChunk.embedding_model),
        },
    ).returning(KnowledgeChunk.position, KnowledgeChunk.id)
    return {row.position: row.id for row in await session.execute(statement)}


async def _write_chunks(
    session: AsyncSession, tenant_id: UUID, document_id: UUID, plan: _Plan, chunks: list[Chunk]
) -> None:
    """The document's chunks as `chunks` says, whatever an earlier run left: vectors of another model cleared,
    vectors of unchanged text kept, chunks beyond the new counts removed."""
    await session.execute(
        update(KnowledgeChunk)
        .where(
            KnowledgeChunk.document_id == document_id,
            KnowledgeChunk.embedding_model.is_distinct_from(plan.embedding_model),
        )
        .values(embedding=None, embedding_dim=None, embedding_model=None)
    )
    sections = [piece for piece in chunks if piece.level == "section"]
    passages = [piece for piece in chunks if piece.level == "passage"]
    section_ids: dict[int, UUID] = {}
    for start in range(0, len(sections), WRITE_BATCH):
        batch = sections[start : start + WRITE_BATCH]
        section_ids |= await _upsert(session, [_row(tenant_id, document_id, plan, piece, None) for piece in batch])
    for start in range(0, len(passages), WRITE_BATCH):
        batch = passages[start : start + WRITE_BATCH]
        rows = [
            _row(
                tenant_id,
                document_id,
                plan,
                piece,
                section_ids[piece.parent_position] if piece.parent_position is not None else None,
            )
            for piece in batch
        ]
        await _upsert(session, rows)
    await session.execute(
        delete(KnowledgeChunk).where(
            KnowledgeChunk.document_id == document_id,
            ((KnowledgeChunk.level == "passage") & (KnowledgeChunk.position >= len(passages)))
            | ((KnowledgeChunk.level == "section") & (KnowledgeChunk.position >= len(sections))),
        )
    )


async def _embed_passages(job: JobContext, document_id: UUID, plan: _Plan, passages: int) -> int:
    """Embed, batch by batch, the passages that have no vector yet; each batch's vectors commit with it.

    Sections are not embedded: search matches passages, and a passage leads to its section by `parent_id`.
    """
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        token = await chat_token(session, plan.billed_user_id)
        await session.commit()
    embedded = 0
    while True:
        await job.checkpoint()
        async with tenant_session(job.services.session_maker, job.tenant_id) as session:
            batch = (
                await session.execute(
                    select(KnowledgeChunk.id, KnowledgeChunk.text)
                    .where(
                        KnowledgeChunk.document_id == document_id,
                        KnowledgeChunk.level == "passage",
                        KnowledgeChunk.embedding.is_(None),
                    )
                    .order_by(KnowledgeChunk.position)
                    .limit(EMBED_BATCH)
                )
            ).all()
            await session.rollback()
        if not batch:
            return embedded
        try:
            vectors = await embed(job.services.gateway, token, plan.embedding_model, [row.text for row in batch])
        except GatewayRefused as refusal:
            if refusal.status_code < 500:
                raise JobFailed(f"The embedding model could not be called: {refusal.detail}") from None
            raise
        except EmbeddingRejected as rejected:
            raise JobFailed(rejected.detail) from None
        async with _owned(job, document_id) as session:
            for row, vector in zip(batch, vectors, strict=True):
                await session.execute(
                    update(KnowledgeChunk)
                    .where(KnowledgeChunk.id == row.id, KnowledgeChunk.embedding.is_(None))
                    .values(embedding=vector, embedding_dim=len(vector), embedding_model=plan.embedding_model)
                )
        embedded += len(batch)
        done = passages - await _unembedded(job, document_id)
        await job.progress(30 + 65 * done // max(passages, 1), f"Embedded {done} of {passages} passages.")


async def _unembedded(job: JobContext, document_id: UUID) -> int:
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(KnowledgeChunk)
            .where(
                KnowledgeChunk.document_id == document_id,
                KnowledgeChunk.level == "passage",
                KnowledgeChunk.embedding.is_(None),
            )
        )
        await session.rollback()
    return int(count or 0)


async def _stored(job: JobContext, object_key: str) -> bool:
    try:
        return await job.services.objects.exists(job.tenant_id, object_key)
    except StorageError:
        return True  # the store is unreachable: a later attempt may read it


async def _set_status(job: JobContext, document_id: UUID, status: str, error: str | None) -> None:
    """The document's outcome, written only while it names this job (a re-index may have taken it over)."""
    async with tenant_session(job.services.session_maker, job.tenant_id) as session:
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == document_id, KnowledgeDocument.job_id == job.job_id)
            .values(status=status, error=error)
        )
        await session.commit()
