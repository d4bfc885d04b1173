"""Memory jobs: extract facts from a conversation and reconcile them with what is remembered; re-embed."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.services import ADMIN_ROLES, is_admin
from app.auth.tokens import Principal
from app.errors import ServiceError
from app.gateway.caches import TokenInfo
from app.gateway.client import EmbeddingRejected, GatewayRefused, chat_token, complete, embed
from app.jobs.registry import JobContext, JobFailed, WorkerServices, job_kind, scheduled
from app.memory import services
from app.memory.schemas import (
    MEMORY_ARCHIVE_FORMAT,
    ArchivedMemory,
    Category,
    ChatTurn,
    Decision,
    Decisions,
    ExtractedFact,
    Extraction,
    MemoryArchive,
    MemoryExportPayload,
    MemoryImportPayload,
    MemorySettings,
    ScopeId,
)
from app.schemas import Input
from app.storage.base import StorageError
from app.tenants.services import Actor, all_tenant_ids, audit_change, record_audit_event
from db.auth import User
from db.memory import Memory
from db.session import tenant_session

T = TypeVar("T", Extraction, Decisions)
ANSWER_LOG_LIMIT = 2000
NEIGHBOURS_PER_FACT = 5
REEMBED_BATCH = 64
# Memories embedded per gateway call when importing an archive.
IMPORT_BATCH = 64

EXTRACTION_PROMPT = """You extract lasting facts about the user from a conversation.
Keep what will still matter later: identity, preferences, plans, relationships, circumstances.
Skip greetings, small talk and anything said only about the assistant.
Answer with only a JSON object, no prose and no code fence:
{"facts": [{"text": "<one short statement about the user>", "type": "fact" | "preference" | "episodic",
"importance": <1-100>, "category": "<optional one-word topic, e.g. health, work, food>"}]}
With nothing worth keeping, answer {"facts": []}."""

DECISION_PROMPT = """You keep a user's memory consistent. You get the memories that already exist, each with
an id, and new facts. For each new fact decide one event:
- ADD: new information (give its text; the id may be anything).
- UPDATE: an existing memory about the same thing should now read differently (give the existing id and the
  new full text).
- DELETE: an existing memory is contradicted by the new fact (give the existing id, a reason, and as text the
  new fact that replaces it; an empty text when the fact only ends the old one, e.g. "no longer has a dog").
- NONE: the fact is already known (give the existing id).
Use only the ids you were given. Answer with only a JSON object, no prose and no code fence:
{"memory": [{"id": "<id>", "event": "ADD" | "UPDATE" | "DELETE" | "NONE", "text": "<text>",
"reason": "<why>"}]}"""


class ExtractPayload(Input):
    user_id: UUID
    messages: list[ChatTurn]
    metadata: dict[str, Any] = {}
    source_type: str = "api"
    source_id: UUID | None = None
    source_message_id: UUID | None = None
    # Given to every memory the job adds (a category given here wins over the memory model's).
    category: Category | None = None
    expires_at: datetime.datetime | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None


def parse_answer(content: str, answer_type: type[T]) -> T:
    """Strict: the whole answer must be the JSON object (a surrounding code fence is the one thing forgiven)."""
    stripped = content.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    return msgspec.json.decode(stripped, type=answer_type)


async def _ask(job: JobContext, token: TokenInfo, model: str, messages: list[dict[str, str]]) -> str:
    try:
        answer = await complete(
            job.services.gateway, token, {"model": model, "messages": messages, "temperature": 0, "max_tokens": 2048}
        )
    except GatewayRefused as refusal:
        if refusal.status_code < 500:
            raise JobFailed(f"The memory model could not be called: {refusal.detail}") from None
        raise  # the provider failed: another attempt may succeed
    choices = answer.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


async def ask_json(
    job: JobContext, token: TokenInfo, model: str, messages: list[dict[str, str]], answer_type: type[T]
) -> T:
    """Ask the memory model; a malformed answer is asked again once, then the job fails with both answers logged."""
    content = await _ask(job, token, model, messages)
    try:
        return parse_answer(content, answer_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        await job.log(
            "The memory model's answer was not the JSON asked for; asking once more.",
            answer=content[:ANSWER_LOG_LIMIT],
            error=str(error)[:300],
        )
        first_error = error
    retry = [
        *messages,
        {"role": "assistant", "content": content},
        {"role": "user", "content": f"That answer could not be used ({first_error}). Reply with only the JSON object."},
    ]
    content = await _ask(job, token, model, retry)
    try:
        return parse_answer(content, answer_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        await job.log(
            "The memory model's second answer was not the JSON asked for either.",
            answer=content[:ANSWER_LOG_LIMIT],
            error=str(error)[:300],
        )
        raise JobFailed(
            f"The memory model did not answer with the JSON asked for, twice ({error}); its answers are in the "
            "job's events and nothing was stored."
        ) from None


async def _embeddings(
    job: JobContext, token: TokenInfo, settings: MemorySettings, texts: list[str]
) -> list[services.Embedding | None]:
    if settings.embedding_model is None or not texts:
        return [None] * len(texts)
    try:
        vectors = await embed(job.services.gateway, token, settings.embedding_model, texts)
    except GatewayRefused as refusal:
        if refusal.status_code < 500:
            raise JobFailed(f"The embedding model could not be called: {refusal.detail}") from None
        raise
    except EmbeddingRejected as rejected:
        raise JobFailed(rejected.detail) from None
    return [services.Embedding(model=settings.embedding_model, vector=vector) for vector in vectors]


class _Outcome(msgspec.Struct):
    facts: int = 0
    duplicates: int = 0
    added: int = 0
    updated: int = 0
    invalidated: int = 0
    unchanged: int = 0
    rejected: int = 0
    associations: int = 0


@job_kind("memory.extract", payload_type=ExtractPayload, timeout_seconds=300)
async def extract_memories(job: JobContext) -> dict[str, Any]:
    """Facts from the conversation, deduplicated, reconciled with the user's memories by the memory model.

    Everything the job writes commits with its success: a failed or retried job leaves no partial memory.
    """
    payload = msgspec.convert(job.payload, ExtractPayload)
    session = job.session
    settings = await services.memory_settings(session)
    if not settings.enabled:
        return {"skipped": "memory is turned off for this organization"}
    if settings.llm_model is None:
        raise JobFailed("No memory model is configured; an administrator sets one in the memory settings.")
    user = await session.get(User, payload.user_id)
    if user is None:
        raise JobFailed("The user of these messages no longer exists.")
    # One extraction at a time per user: two jobs deciding on the same memories would overwrite each other.
    await _lock_user_memories(session, payload.user_id)
    async with tenant_session(job.services.session_maker, job.tenant_id) as token_session:
        token = await chat_token(token_session, payload.user_id)
        await token_session.commit()
    outcome = _Outcome()

    conversation = "\n".join(f"{turn.role}: {turn.content}" for turn in payload.messages)
    extraction = await ask_json(
        job,
        token,
        settings.llm_model,
        [{"role": "system", "content": EXTRACTION_PROMPT}, {"role": "user", "content": conversation}],
        Extraction,
    )
    await job.checkpoint()
    facts: dict[str, ExtractedFact] = {}
    for fact in extraction.facts:
        if services.normalize(fact.text):
            facts.setdefault(services.memory_hash(fact.text), fact)
    outcome.facts = len(facts)
    for fact_hash, fact in list(facts.items()):
        if await services.find_duplicate(session, payload.user_id, fact.text) is not None:
            del facts[fact_hash]
            outcome.duplicates += 1
    if not facts:
        return _result(outcome)

    fact_list = list(facts.values())
    embeddings = await _embeddings(job, token, settings, [fact.text for fact in fact_list])
    known: dict[str, services.Embedding] = {}
    neighbours: list[UUID] = []
    for fact, embedding in zip(fact_list, embeddings, strict=True):
        if embedding is None:
            continue
        await _checked_dimension(session, embedding)
        known[services.memory_hash(fact.text)] = embedding
        # Exact, not through the HNSW index: a neighbour the approximate search missed would not be shown to
        # the memory model, and its contradiction would be stored beside it. A job can afford the exact scan.
        for memory_id, _ in await services.nearest(
            session, user_id=payload.user_id, embedding=embedding, limit=NEIGHBOURS_PER_FACT, exact=True
        ):
            if memory_id not in neighbours:
                neighbours.append(memory_id)
    await job.checkpoint()

    # Existing memories are shown to the model under small integer ids: it cannot invent a real one.
    by_alias = {str(index): memory_id for index, memory_id in enumerate(neighbours)}
    if by_alias:
        existing = {
            memory.id: memory for memory in await session.scalars(select(Memory).where(Memory.id.in_(neighbours)))
        }
        question = msgspec.json.encode(
            {
                "existing_memories": [
                    {"id": alias, "text": existing[memory_id].memory_text} for alias, memory_id in by_alias.items()
                ],
                "new_facts": [fact.text for fact in fact_list],
            }
        ).decode()
        decisions = (
            await ask_json(
                job,
                token,
                settings.llm_model,
                [{"role": "system", "content": DECISION_PROMPT}, {"role": "user", "content": question}],
                Decisions,
            )
        ).memory
    else:
        decisions = [Decision(id=str(index), event="ADD", text=fact.text) for index, fact in enumerate(fact_list)]
    await job.checkpoint()
    await _apply(job, payload, settings, token, fact_list, decisions, by_alias, known, outcome)
    return _result(outcome)


def _result(outcome: _Outcome) -> dict[str, Any]:
    return {field: getattr(outcome, field) for field in outcome.__struct_fields__}


async def _checked_dimension(session: Any, embedding: services.Embedding) -> None:
    try:
        await services.check_dimension(session, embedding)
    except services.DimensionConflict as conflict:
        raise JobFailed(conflict.detail) from None


async def _apply(
    job: JobContext,
    payload: ExtractPayload,
    settings: MemorySettings,
    token: TokenInfo,
    facts: list[ExtractedFact],
    decisions: list[Decision],
    by_alias: dict[str, UUID],
    known: dict[str, services.Embedding],
    outcome: _Outcome,
) -> None:
    session = job.session
    actor = services.MemoryAuthor(
        kind="job", user_id=payload.user_id, job_id=job.job_id, source_message_id=payload.source_message_id
    )
    fact_by_hash = {services.memory_hash(fact.text): fact for fact in facts}
    usable: list[Decision] = []
    for decision in decisions:
        problem = _problem(decision, by_alias)
        if problem is not None:
            outcome.rejected += 1
            await job.log(
                f"A decision of the memory model was rejected: {problem}", decision=msgspec.to_builtins(decision)
            )
        else:
            usable.append(decision)
    # New texts the facts' vectors do not cover (the model rephrased) are embedded together.
    to_embed = sorted(
        {
            services.normalize(decision.text)
            for decision in usable
            if decision.event in ("ADD", "UPDATE", "DELETE")
            and services.normalize(decision.text)
            and services.memory_hash(decision.text) not in known
        }
    )
    for text_value, embedding in zip(to_embed, await _embeddings(job, token, settings, to_embed), strict=True):
        if embedding is not None:
            known[services.memory_hash(text_value)] = embedding
    changed: list[tuple[Memory, services.Embedding | None]] = []
    # What this job added, by hash: a DELETE that names its replacing fact and the ADD of that fact are one.
    added_now: dict[str, Memory] = {}

    async def add(text_value: str) -> Memory | None:
        key = services.memory_hash(text_value)
        if key in added_now:
            return added_now[key]
        if await services.find_duplicate(session, payload.user_id, text_value) is not None:
            outcome.duplicates += 1
            return None
        fact = fact_by_hash.get(key)
        embedding = known.get(key)
        added = await services.add_memory(
            session,
            user_id=payload.user_id,
            text_value=text_value,
            embedding=embedding,
            actor=actor,
            memory_type=fact.type if fact else "fact",
            importance=fact.importance if fact else 50,
            metadata=payload.metadata,
            source_type=payload.source_type,
            source_id=payload.source_id,
            category=payload.category or (fact.category if fact else None),
            expires_at=payload.expires_at,
            agent_id=payload.agent_id,
            run_id=payload.run_id,
        )
        added_now[key] = added
        changed.append((added, embedding))
        outcome.added += 1
        return added

    for decision in usable:
        embedding = known.get(services.memory_hash(decision.text)) if decision.text else None
        if decision.event == "ADD":
            await add(decision.text)
            continue
        memory = await session.get(Memory, by_alias[decision.id])
        if memory is None or memory.user_id != payload.user_id or memory.status != "active":
            outcome.rejected += 1
            continue
        if decision.event == "UPDATE":
            if services.memory_hash(decision.text) == memory.memory_hash:
                outcome.unchanged += 1
                continue
            if await services.find_duplicate(session, payload.user_id, decision.text) is not None:
                outcome.duplicates += 1
                continue
            await services.change_memory(
                session, memory, text_value=decision.text, embedding=embedding, actor=actor, reason=decision.reason
            )
            changed.append((memory, embedding))
            outcome.updated += 1
        elif decision.event == "DELETE":
            # Latest truth wins: the contradicting fact is stored and the old memory points at it.
            replacement = None
            if services.normalize(decision.text) and services.memory_hash(decision.text) != memory.memory_hash:
                replacement = await add(decision.text) or await services.find_duplicate(
                    session, payload.user_id, decision.text
                )
            await services.invalidate_memory(
                session,
                memory,
                reason=decision.reason or "Contradicted by a newer statement.",
                actor=actor,
                superseded_by=replacement,
            )
            outcome.invalidated += 1
        else:
            outcome.unchanged += 1
    for memory, embedding in changed:
        outcome.associations += await services.link_similar(
            session, memory, embedding, threshold=settings.association_threshold
        )


def _problem(decision: Decision, by_alias: dict[str, UUID]) -> str | None:
    if decision.event == "ADD":
        return None if services.normalize(decision.text) else "ADD without a text"
    if decision.id not in by_alias:
        return f"{decision.event} names the id '{decision.id}', which was not among the memories shown"
    if decision.event == "UPDATE" and not services.normalize(decision.text):
        return "UPDATE without a new text"
    return None


@job_kind("memory.reembed", startable_by="admin", timeout_seconds=3600)
async def reembed_memories(job: JobContext) -> dict[str, Any]:
    """Embed again, with the organization's current embedding model, every memory embedded with another."""
    session = job.session
    settings = await services.memory_settings(session)
    if settings.embedding_model is None:
        raise JobFailed("No embedding model is configured; an administrator sets one in the memory settings.")
    stale = services.stale_memories(settings.embedding_model)
    total = await session.scalar(select(func.count()).select_from(stale.subquery())) or 0
    done = 0
    while memories := list(await session.scalars(stale.order_by(Memory.id).limit(REEMBED_BATCH))):
        await job.checkpoint()
        by_user: dict[UUID, list[Memory]] = {}
        for memory in memories:
            by_user.setdefault(memory.user_id, []).append(memory)
        for user_id, group in by_user.items():
            async with tenant_session(job.services.session_maker, job.tenant_id) as token_session:
                token = await chat_token(token_session, user_id)
                await token_session.commit()
            embeddings = await _embeddings(job, token, settings, [memory.memory_text for memory in group])
            if embeddings and embeddings[0] is not None:
                await _checked_dimension(session, embeddings[0])
            for memory, embedding in zip(group, embeddings, strict=True):
                assert embedding is not None
                memory.embedding = embedding.vector
                memory.embedding_model = embedding.model
                memory.embedding_dim = len(embedding.vector)
        await session.flush()
        done += len(memories)
        await job.progress(int(done * 100 / max(total, 1)))
    return {"reembedded": done, "model": settings.embedding_model}


async def _lock_user_memories(session: AsyncSession, user_id: UUID) -> None:
    """Until this transaction ends, no other extraction or import changes this user's memories."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"memory:{user_id}"})


async def _admit_export(session: AsyncSession, caller: Principal, payload: dict[str, Any]) -> None:
    """Whose memories, decided at submission as for imports: someone the caller may not export is refused now."""
    requested = msgspec.convert(payload, MemoryExportPayload).user_id
    await services.memory_owner(session, caller_id=caller.user_id, is_admin=is_admin(caller), requested=requested)


@job_kind(
    "memory.export",
    startable_by="user",
    payload_type=MemoryExportPayload,
    timeout_seconds=900,
    admit=_admit_export,
)
async def export_memories(job: JobContext) -> dict[str, Any]:
    """A user's active memories as a JSON archive in the object store (`GET /api/memories/exports/{job}`)."""
    payload = msgspec.convert(job.payload, MemoryExportPayload)
    actor = await job.session.get(User, job.actor_user_id) if job.actor_user_id else None
    if actor is None:
        raise JobFailed("An export is started by a user; this job has none.")
    try:
        owner = await services.memory_owner(
            job.session, caller_id=actor.id, is_admin=actor.role in ADMIN_ROLES, requested=payload.user_id
        )
    except ServiceError as refused:
        raise JobFailed(refused.detail) from None
    memories = await job.session.scalars(
        select(Memory)
        .where(Memory.user_id == owner, Memory.status == "active", services.not_expired())
        .order_by(Memory.created_at)
    )
    archive = MemoryArchive(
        format=MEMORY_ARCHIVE_FORMAT,
        exported_at=datetime.datetime.now(datetime.UTC),
        memories=[
            ArchivedMemory(
                text=memory.memory_text,
                memory_type=memory.memory_type,  # type: ignore[arg-type]
                importance=memory.importance_score,
                category=memory.category,
                metadata=memory.attributes,
                created_at=memory.created_at,
                expires_at=memory.expires_at,
                agent_id=memory.agent_id,
                run_id=memory.run_id,
            )
            for memory in memories
        ],
    )
    with tempfile.TemporaryDirectory(prefix="lyss-memories-") as scratch:
        path = Path(scratch) / "memories.json"
        path.write_bytes(msgspec.json.encode(archive))
        try:
            size = await job.services.objects.put(
                job.tenant_id, services.archive_name(job.job_id), path, content_type="application/json"
            )
        except StorageError as error:
            raise JobFailed(error.detail) from None
    audit_change(
        job.session,
        Actor(name=actor.email, user_id=actor.id),
        "memory.exported",
        "user",
        owner,
        memories=len(archive.memories),
    )
    return {"memories": len(archive.memories), "bytes": size}


@job_kind("memory.import", payload_type=MemoryImportPayload, timeout_seconds=1800)
async def import_memories(job: JobContext) -> dict[str, Any]:
    """Add an archive's memories to a user (exact duplicates skipped), embedded with the current model.

    All or nothing: the memories are written in the job's transaction, so a failure leaves none behind.
    """
    payload = msgspec.convert(job.payload, MemoryImportPayload)
    store = job.services.objects
    with tempfile.TemporaryDirectory(prefix="lyss-memories-") as scratch:
        path = Path(scratch) / "memories.json"
        try:
            await store.fetch(job.tenant_id, payload.object_name, path)
        except StorageError as error:
            raise JobFailed(error.detail) from None
        try:
            archive = msgspec.json.decode(path.read_bytes(), type=MemoryArchive)
        except msgspec.DecodeError as error:
            raise JobFailed(f"The archive is not a {MEMORY_ARCHIVE_FORMAT} file: {error}") from None
    session = job.session
    await _lock_user_memories(session, payload.user_id)  # duplicates are judged against settled memories
    settings = await services.memory_settings(session)
    actor = services.MemoryAuthor(kind="job", job_id=job.job_id)
    fresh: dict[str, ArchivedMemory] = {}
    duplicates = expired = 0
    now = datetime.datetime.now(datetime.UTC)
    for item in archive.memories:
        key = services.memory_hash(item.text)
        if item.expires_at is not None and item.expires_at <= now:
            expired += 1  # it expired since the export: importing it would only bring it back to be pruned
        elif key in fresh or await services.find_duplicate(session, payload.user_id, item.text) is not None:
            duplicates += 1
        else:
            fresh[key] = item
    items = list(fresh.values())
    if settings.embedding_model is not None and items:
        async with tenant_session(job.services.session_maker, job.tenant_id) as token_session:
            token = await chat_token(token_session, payload.user_id)
            await token_session.commit()
    for start in range(0, len(items), IMPORT_BATCH):
        await job.checkpoint()
        batch = items[start : start + IMPORT_BATCH]
        embeddings: list[services.Embedding | None] = [None] * len(batch)
        if settings.embedding_model is not None:
            embeddings = await _embeddings(job, token, settings, [item.text for item in batch])
            if embeddings and embeddings[0] is not None:
                await _checked_dimension(session, embeddings[0])
        for item, embedding in zip(batch, embeddings, strict=True):
            await services.add_memory(
                session,
                user_id=payload.user_id,
                text_value=item.text,
                embedding=embedding,
                actor=actor,
                memory_type=item.memory_type,
                importance=item.importance,
                metadata=item.metadata,
                source_type="import",
                category=item.category,
                expires_at=item.expires_at,
                agent_id=item.agent_id,
                run_id=item.run_id,
            )
        await job.progress(min(99, (start + len(batch)) * 100 // len(items)))
    tenant_id, name = job.tenant_id, payload.object_name
    job.after_success(lambda: store.delete(tenant_id, name))
    return {"imported": len(items), "duplicates": duplicates, "expired": expired}


@scheduled("memory.prune", cron="*/10 * * * *")
async def prune_expired_memories(services_: WorkerServices) -> dict[str, Any]:
    """Delete every tenant's expired memories (already hidden from every read), one tenant at a time under
    its row-level security, with an audit event for each tenant that had some."""
    async with services_.session_maker() as session:
        tenant_ids = await all_tenant_ids(session)
    pruned = 0
    for tenant_id in tenant_ids:
        async with tenant_session(services_.session_maker, tenant_id) as session:
            count = await services.prune_expired(session)
            if count:
                record_audit_event(
                    session,
                    actor="system",
                    action="memory.pruned",
                    target_type="organization",
                    target_id=tenant_id,
                    details={"count": count},
                )
            await session.commit()
        pruned += count
    return {"pruned": pruned}
