"""Knowledge bases and their documents: who may read or change them, settings checks, uploads to the object store.

Every function works in the caller's tenant session (RLS keeps tenants apart); within a tenant, the scope of
a base says who reaches it: a `user` base its owner, a `group` base the group's members (its admins change
it), a `tenant` base everyone (its admins change it); tenant admins reach every base. A base the caller may
not read is "not found", never "forbidden": its existence is not confirmed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from saq.queue.redis import RedisQueue
from sqlalchemy import ColumnElement, cast, delete, func, literal, or_, select, true, update
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from app.errors import InvalidRequest, NotAllowed, NotFound, ServiceError, ServiceUnavailable
from app.gateway.adapters import ADAPTERS
from app.jobs.services import RETRYABLE_STATUSES, cancel_job, retry_job, submit_job
from app.knowledge import search_cache
from app.knowledge.fetch import Fetched, fetch_document
from app.knowledge.schemas import (
    ChunkRead,
    DocumentRead,
    DocumentUploaded,
    KnowledgeBaseCreate,
    KnowledgeBaseRead,
    KnowledgeBaseUpdate,
)
from app.memory.services import text_search_languages
from app.schemas import read_as
from app.settings import Settings
from app.storage.base import ObjectStore, StorageError
from app.tenants.services import Actor, audit_change, own_organization, tenant_policy
from db.auth import User
from db.knowledge import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from db.provider import Channel, ProviderType
from db.tenant import Job, UserGroup, UserGroupMember

GROUP_MANAGER_ROLE = "admin"
INGEST_JOB_KIND = "knowledge.ingest"
# The settings whose change makes every document of the base be ingested again.
REINDEXING_SETTINGS = {"embedding_model", "chunk_tokens", "chunk_overlap"}
# The settings whose change changes what a search finds at once: which vectors are searched, how words match
# (a new chunking changes nothing until the re-index it queues, which marks the base changed itself).
SEARCH_SETTINGS = {"embedding_model", "language"}
# What an upload may be: the extension says the type, the content must agree (see `sniffed_type`).
DOCUMENT_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
}
# The part every Office Open XML file of the type has (its main document), by extension.
_OFFICE_PARTS = {".docx": "word/document.xml", ".pptx": "ppt/presentation.xml", ".xlsx": "xl/workbook.xml"}
_TEXT_TYPES = {"text/csv", "text/html", "text/markdown", "text/plain"}
_HTML_TAG = re.compile(rb"<(?:!doctype|html|head|body|p|div|h[1-6]|table|ul|ol|span|a)\b", re.IGNORECASE)
_UNSAFE_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_FILENAME = 255
MAX_KEY_FILENAME = 120
MAX_METADATA_BYTES = 16 * 1024
# Room in an upload's request body for the multipart framing and the fields around the file itself.
MULTIPART_ALLOWANCE = 64 * 1024


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedType(ServiceError):
    status_code = 415


class Caller(msgspec.Struct, frozen=True):
    """Who reads or changes bases: the signed-in user and whether they administer the tenant."""

    user_id: UUID
    is_admin: bool


# --- reading and access ---------------------------------------------------------------------------


async def _managed_groups(session: AsyncSession, user_id: UUID) -> set[UUID]:
    rows = await session.scalars(
        select(UserGroupMember.group_id).where(
            UserGroupMember.user_id == user_id, UserGroupMember.role == GROUP_MANAGER_ROLE
        )
    )
    return set(rows)


def _readable_by(caller: Caller) -> ColumnElement[bool]:
    """The bases `caller` may read, as a condition on kb_bases."""
    if caller.is_admin:
        return true()
    groups = select(UserGroupMember.group_id).where(UserGroupMember.user_id == caller.user_id)
    return or_(
        KnowledgeBase.scope == "tenant",
        (KnowledgeBase.scope == "user") & (KnowledgeBase.owner_user_id == caller.user_id),
        (KnowledgeBase.scope == "group") & KnowledgeBase.group_id.in_(groups),
    )


def _writable(base: KnowledgeBase, caller: Caller, managed_groups: set[UUID]) -> bool:
    if caller.is_admin:
        return True
    if base.scope == "user":
        return base.owner_user_id == caller.user_id
    if base.scope == "group":
        return base.group_id in managed_groups
    return False


def base_read(base: KnowledgeBase, *, writable: bool) -> KnowledgeBaseRead:
    return read_as(KnowledgeBaseRead, base, writable=writable)


def document_read(document: KnowledgeDocument) -> DocumentRead:
    return read_as(DocumentRead, document, metadata=dict(document.attributes))


async def list_bases(session: AsyncSession, caller: Caller) -> list[KnowledgeBaseRead]:
    bases = await session.scalars(
        select(KnowledgeBase).where(_readable_by(caller)).order_by(KnowledgeBase.name, KnowledgeBase.id)
    )
    managed = await _managed_groups(session, caller.user_id)
    return [base_read(base, writable=_writable(base, caller, managed)) for base in bases]


async def readable_base(session: AsyncSession, base_id: UUID, caller: Caller) -> KnowledgeBase:
    base = await session.scalar(select(KnowledgeBase).where(KnowledgeBase.id == base_id, _readable_by(caller)))
    if base is None:
        raise NotFound("No such knowledge base.")
    return base


async def readable_bases(session: AsyncSession, base_ids: list[UUID], caller: Caller) -> list[KnowledgeBase]:
    """The bases of `base_ids`, in that order; the first the caller may not read is a 404 naming it."""
    bases = {
        base.id: base
        for base in await session.scalars(
            select(KnowledgeBase).where(KnowledgeBase.id.in_(base_ids), _readable_by(caller))
        )
    }
    for base_id in base_ids:
        if base_id not in bases:
            raise NotFound(f"`base_ids`: no such knowledge base: {base_id}.", field="base_ids")
    return [bases[base_id] for base_id in base_ids]


async def still_readable(session: AsyncSession, base_ids: list[UUID], caller: Caller) -> list[UUID]:
    """Those of `base_ids` that still exist and the caller may still read, in the order given (no error)."""
    if not base_ids:
        return []
    found = set(
        await session.scalars(select(KnowledgeBase.id).where(KnowledgeBase.id.in_(base_ids), _readable_by(caller)))
    )
    return [base_id for base_id in dict.fromkeys(base_ids) if base_id in found]


async def writable_base(session: AsyncSession, base_id: UUID, caller: Caller) -> KnowledgeBase:
    """A base the caller may change: one they can read but not change is a 403, one they cannot read a 404."""
    base = await readable_base(session, base_id, caller)
    if not _writable(base, caller, await _managed_groups(session, caller.user_id)):
        raise NotAllowed("You can read this knowledge base but not change it.")
    return base


async def is_writable(session: AsyncSession, base: KnowledgeBase, caller: Caller) -> bool:
    return _writable(base, caller, await _managed_groups(session, caller.user_id))


async def document_counts(session: AsyncSession, base_ids: list[UUID]) -> dict[UUID, int]:
    """How many documents each of `base_ids` holds (a base without any is left out)."""
    rows = await session.execute(
        select(KnowledgeDocument.base_id, func.count().label("documents"))
        .where(KnowledgeDocument.base_id.in_(base_ids))
        .group_by(KnowledgeDocument.base_id)
    )
    return {row.base_id: row.documents for row in rows}


async def groups_for_new_base(session: AsyncSession, caller: Caller) -> list[tuple[UUID, str]]:
    """The groups `caller` may create a base for, by name: every group for an admin, else those they manage."""
    query = select(UserGroup.id, UserGroup.name).order_by(UserGroup.name)
    if not caller.is_admin:
        query = query.where(UserGroup.id.in_(await _managed_groups(session, caller.user_id)))
    return [(row.id, row.name) for row in await session.execute(query)]


async def chunk_preview(session: AsyncSession, document: KnowledgeDocument, limit: int) -> list[ChunkRead]:
    """The document's first `limit` passages (what search finds), in reading order."""
    rows = await session.scalars(
        select(KnowledgeChunk)
        .where(KnowledgeChunk.document_id == document.id, KnowledgeChunk.level == "passage")
        .order_by(KnowledgeChunk.position)
        .limit(limit)
    )
    return [read_as(ChunkRead, row) for row in rows]


async def document_chunk(session: AsyncSession, document: KnowledgeDocument, chunk_id: UUID) -> ChunkRead | None:
    """One of the document's passages, or None if it has no such passage."""
    row = await session.scalar(
        select(KnowledgeChunk).where(
            KnowledgeChunk.id == chunk_id, KnowledgeChunk.document_id == document.id, KnowledgeChunk.level == "passage"
        )
    )
    return None if row is None else read_as(ChunkRead, row)


# --- settings checks ------------------------------------------------------------------------------


async def embedding_models(session: AsyncSession) -> list[str]:
    """The models the tenant's enabled, organization-wide channels serve through an embeddings API, sorted."""
    rows = await session.execute(
        select(Channel.models, ProviderType.api_format)
        .join(ProviderType, ProviderType.id == Channel.type_id)
        .where(Channel.status == "enabled", Channel.config_scope == "tenant")
    )
    return sorted(
        {model for models, api_format in rows if ADAPTERS[api_format].supports_embeddings for model in models}
    )


async def _check_embedding_model(session: AsyncSession, model: str) -> None:
    served = await embedding_models(session)
    if model not in served:
        offered = ", ".join(served) if served else "none yet: add a channel that serves embeddings"
        raise InvalidRequest(
            f"`embedding_model`: no enabled channel of the organization serves '{model}' for embeddings; "
            f"models: {offered}.",
            field="embedding_model",
        )


async def _check_language(session: AsyncSession, language: str) -> None:
    languages = await text_search_languages(session)
    if language not in languages:
        raise InvalidRequest(
            f"`language`: '{language}' is not a language words can be matched in; "
            f"choose one of: {', '.join(languages)}.",
            field="language",
        )


def _check_chunking(chunk_tokens: int, chunk_overlap: int) -> None:
    # A passage steps forward by at least half its length (app/knowledge/chunking.py): a larger overlap would
    # embed most of the text twice.
    if chunk_overlap * 2 > chunk_tokens:
        raise InvalidRequest(
            f"`chunk_overlap` ({chunk_overlap}) must be at most half of `chunk_tokens` ({chunk_tokens}).",
            field="chunk_overlap",
        )


def _check_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidRequest("`name` must not be blank.", field="name")
    return cleaned


async def _name_taken(session: AsyncSession, base: KnowledgeBase, name: str) -> bool:
    same_owner = select(KnowledgeBase.id).where(
        KnowledgeBase.name == name,
        KnowledgeBase.owner_user_id.is_not_distinct_from(base.owner_user_id),
        KnowledgeBase.group_id.is_not_distinct_from(base.group_id),
        KnowledgeBase.id != base.id,
    )
    return bool(await session.scalar(same_owner.exists().select()))


async def _owner(session: AsyncSession, data: KnowledgeBaseCreate, caller: Caller) -> tuple[UUID | None, UUID | None]:
    """The (owner_user_id, group_id) the scope needs, after checking the caller may create a base for them."""
    if data.scope == "user":
        if data.group_id is not None:
            raise InvalidRequest("A user's knowledge base has no `group_id`.", field="group_id")
        owner = data.owner_user_id or caller.user_id
        if owner != caller.user_id:
            if not caller.is_admin:
                raise NotAllowed(
                    "You can only create knowledge bases of your own (`owner_user_id`).", field="owner_user_id"
                )
            if await session.get(User, owner) is None:
                raise InvalidRequest("`owner_user_id`: no such user in this organization.", field="owner_user_id")
        return owner, None
    if data.scope == "group":
        if data.owner_user_id is not None:
            raise InvalidRequest("A group's knowledge base has no `owner_user_id`.", field="owner_user_id")
        if data.group_id is None:
            raise InvalidRequest("A group's knowledge base needs a `group_id`.", field="group_id")
        if await session.get(UserGroup, data.group_id) is None:
            raise InvalidRequest("`group_id`: no such group in this organization.", field="group_id")
        if not caller.is_admin and data.group_id not in await _managed_groups(session, caller.user_id):
            raise NotAllowed("Only the group's admins can create its knowledge bases (`group_id`).", field="group_id")
        return None, data.group_id
    for field in ("owner_user_id", "group_id"):
        if getattr(data, field) is not None:
            raise InvalidRequest(f"The organization's knowledge base has no `{field}`.", field=field)
    if not caller.is_admin:
        raise NotAllowed(
            "Only an administrator can create the organization's knowledge bases (`scope`).", field="scope"
        )
    return None, None


# --- changing bases -------------------------------------------------------------------------------


async def create_base(
    session: AsyncSession, caller: Caller, actor: Actor, data: KnowledgeBaseCreate
) -> KnowledgeBaseRead:
    name = _check_name(data.name)
    owner_user_id, group_id = await _owner(session, data, caller)
    _check_chunking(data.chunk_tokens, data.chunk_overlap)
    await _check_language(session, data.language)
    await _check_embedding_model(session, data.embedding_model)
    base = KnowledgeBase(
        id=uuid7(),
        name=name,
        description=data.description,
        scope=data.scope,
        owner_user_id=owner_user_id,
        group_id=group_id,
        embedding_model=data.embedding_model,
        chunk_tokens=data.chunk_tokens,
        chunk_overlap=data.chunk_overlap,
        language=data.language,
        created_by=caller.user_id,
    )
    if await _name_taken(session, base, name):
        raise InvalidRequest(f"`name`: this owner already has a knowledge base named '{name}'.", field="name")
    session.add(base)
    audit_change(session, actor, "knowledge.base_created", "knowledge_base", base.id, name=name, scope=data.scope)
    await session.commit()
    return base_read(base, writable=True)


async def update_base(
    session: AsyncSession,
    base: KnowledgeBase,
    actor: Actor,
    data: KnowledgeBaseUpdate,
    *,
    jobs: JobQueue,
    requested_by: UUID,
) -> KnowledgeBaseRead:
    """Change the settings; a new language re-matches the chunks' words at once, a new embedding model or
    chunking re-indexes every document (queued here; until its job ran, a document's `embedding_model` says
    which model its vectors are of)."""
    changes: dict[str, Any] = {
        name: value
        for name in KnowledgeBaseUpdate.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET and value != getattr(base, name)
    }
    if "name" in changes:
        changes["name"] = _check_name(changes["name"])
        if await _name_taken(session, base, changes["name"]):
            raise InvalidRequest(
                f"`name`: this owner already has a knowledge base named '{changes['name']}'.", field="name"
            )
    _check_chunking(changes.get("chunk_tokens", base.chunk_tokens), changes.get("chunk_overlap", base.chunk_overlap))
    if "language" in changes:
        await _check_language(session, changes["language"])
        await session.execute(
            update(KnowledgeChunk)
            .where(KnowledgeChunk.base_id == base.id)
            .values(language=cast(literal(changes["language"]), REGCONFIG))
        )
    if "embedding_model" in changes:
        await _check_embedding_model(session, changes["embedding_model"])
    for name, value in changes.items():
        setattr(base, name, value)
    if changes:
        audit_change(
            session, actor, "knowledge.base_updated", "knowledge_base", base.id, name=base.name, fields=sorted(changes)
        )
    await session.commit()
    if changes.keys() & SEARCH_SETTINGS:
        await search_cache.changed(jobs.redis, base.tenant_id, [base.id])
    has_documents = select(KnowledgeDocument.id).where(KnowledgeDocument.base_id == base.id).exists().select()
    if changes.keys() & REINDEXING_SETTINGS and await session.scalar(has_documents):
        await reindex_base(session, jobs, base, actor, requested_by=requested_by, reason="settings changed")
    return base_read(base, writable=True)


async def delete_base(
    session: AsyncSession, store: ObjectStore, redis: Redis, base: KnowledgeBase, actor: Actor
) -> None:
    """The base with its documents and chunks, then their files. The rows go first (committed), so no document
    ever points at a file that is gone; a file left by a failed removal is under the base's prefix, found again
    by the next removal of that prefix."""
    tenant_id, base_id, name = base.tenant_id, base.id, base.name
    await session.delete(base)
    audit_change(session, actor, "knowledge.base_deleted", "knowledge_base", base_id, name=name)
    await session.commit()
    await search_cache.changed(redis, tenant_id, [base_id])
    await _delete_objects(store, tenant_id, f"kb/{base_id}/")


async def _delete_objects(store: ObjectStore, tenant_id: UUID, prefix: str) -> None:
    try:
        for name in await store.names(tenant_id, prefix):
            await store.delete(tenant_id, name)
    except StorageError as error:
        raise ServiceUnavailable(error.detail) from None


# --- documents ------------------------------------------------------------------------------------


def display_filename(filename: str) -> str:
    """The name as uploaded, without a path or control characters, at most 255 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip()
    return name[:MAX_FILENAME]


def key_filename(filename: str, extension: str) -> str:
    """The name in the object key: ASCII letters, digits, `.`, `_` and `-`, no leading dot, the extension kept."""
    normalized = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    stem = _UNSAFE_KEY_CHARACTERS.sub("_", normalized[: len(normalized) - len(extension)]).strip("._-")
    return f"{stem[: MAX_KEY_FILENAME - len(extension)] or 'document'}{extension}"


def sniffed_type(filename: str, data: bytes, field: str = "file") -> str:
    """The content type of an upload named `filename`: its extension's, once the content agrees with it.

    Only the allowed types pass, and a file whose bytes say otherwise (a PDF named .txt, a zip named .docx
    that is no Word document) is refused: what the extractors get is what the name says. Refusals name `field`.
    """
    extension = Path(filename.lower()).suffix
    content_type = DOCUMENT_TYPES.get(extension)
    if content_type is None:
        allowed = ", ".join(sorted(DOCUMENT_TYPES))
        raise UnsupportedType(
            f"`{field}`: files of type '{extension or 'none'}' are not taken; send {allowed}.", field=field
        )
    if not data:
        raise InvalidRequest(f"`{field}` is empty.", field=field)
    mismatch = UnsupportedType(f"`{field}`: the content is not that of a {extension} file.", field=field)
    if extension == ".pdf":
        if not data[:1024].lstrip().startswith(b"%PDF-"):
            raise mismatch
    elif extension in _OFFICE_PARTS:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                parts = set(archive.namelist())
        except (zipfile.BadZipFile, ValueError):
            raise mismatch from None
        if _OFFICE_PARTS[extension] not in parts or "[Content_Types].xml" not in parts:
            raise mismatch
    else:
        if data.startswith((b"%PDF-", b"PK\x03\x04")) or b"\x00" in data:
            raise mismatch
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedType(f"`{field}`: a {extension} file must be UTF-8 text.", field=field) from None
        if content_type == "text/html" and not _HTML_TAG.search(data[:65536]):
            raise mismatch
    return content_type


def parse_metadata(text: str | None) -> dict[str, Any]:
    """The upload's optional `metadata` field: a JSON object of at most 16 KiB."""
    if text is None or not text.strip():
        return {}
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"`metadata` is larger than {MAX_METADATA_BYTES // 1024} KiB.", field="metadata")
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise InvalidRequest("`metadata` must be a JSON object.", field="metadata") from None
    if not isinstance(value, dict):
        raise InvalidRequest("`metadata` must be a JSON object.", field="metadata")
    return value


async def list_documents(session: AsyncSession, base: KnowledgeBase) -> list[DocumentRead]:
    documents = await session.scalars(
        select(KnowledgeDocument)
        .where(KnowledgeDocument.base_id == base.id)
        .order_by(KnowledgeDocument.created_at.desc(), KnowledgeDocument.id.desc())
    )
    return [document_read(document) for document in documents]


async def document_view(session: AsyncSession, base: KnowledgeBase, document_id: UUID) -> DocumentRead:
    return document_read(await base_document(session, base, document_id))


async def base_document(session: AsyncSession, base: KnowledgeBase, document_id: UUID) -> KnowledgeDocument:
    document = await session.get(KnowledgeDocument, document_id)
    if document is None or document.base_id != base.id:
        raise NotFound("No such document in this knowledge base.")
    return document


async def _by_hash(session: AsyncSession, base: KnowledgeBase, content_hash: str) -> KnowledgeDocument | None:
    return await session.scalar(
        select(KnowledgeDocument).where(
            KnowledgeDocument.base_id == base.id, KnowledgeDocument.content_hash == content_hash
        )
    )


@dataclass(frozen=True)
class JobQueue:
    """Where ingestion jobs go: the queue, the Redis of its cancel flags, and the settings of their retries."""

    queue: RedisQueue
    redis: Redis
    settings: Settings


def ingestion_key(base: KnowledgeBase, document: KnowledgeDocument) -> str:
    """The idempotency key of ingesting `document` as `base` is set now: the document, its content, the embedding
    model (hashed: a model name may hold characters a key may not) and the chunking that cut it."""
    model = hashlib.sha256(base.embedding_model.encode()).hexdigest()[:16]
    return f"kb-ingest:{document.id}:{document.content_hash}:{model}:{base.chunk_tokens}-{base.chunk_overlap}"


async def queue_ingestion(
    session: AsyncSession, jobs: JobQueue, base: KnowledgeBase, document: KnowledgeDocument, *, requested_by: UUID
) -> Job:
    """Submit the `knowledge.ingest` job of the document (committing the session) and mark it `queued`.

    A second call for the same document, content, model and chunking is the same job: nothing is run twice.
    A document whose last job did exactly this and is ready (or still on its way) keeps that job.
    """
    key = ingestion_key(base, document)
    if document.job_id is not None:
        last = await session.get(Job, document.job_id)
        if (
            last is not None
            and last.idempotency_key == key
            and (last.status in ("queued", "running") or (last.status == "succeeded" and document.status == "ready"))
        ):
            await session.commit()
            return last
    # Committed with the job: its worker may claim the document (`running`) before this function returns.
    document.status = "queued"
    document.error = None
    job, created = await submit_job(
        session,
        jobs.queue,
        jobs.settings,
        tenant_id=base.tenant_id,
        kind=INGEST_JOB_KIND,
        payload={"document_id": str(document.id)},
        idempotency_key=key,
        created_by=requested_by,
    )
    if not created and job.status in RETRYABLE_STATUSES:
        job = await retry_job(session, jobs.queue, jobs.redis, jobs.settings, job, actor=requested_by)
    elif not created and job.status == "succeeded":
        # That job ran for these settings before they changed and changed back: its chunks are gone since.
        job, _ = await submit_job(
            session,
            jobs.queue,
            jobs.settings,
            tenant_id=base.tenant_id,
            kind=INGEST_JOB_KIND,
            payload={"document_id": str(document.id)},
            idempotency_key=f"{key}:{uuid7().hex[-12:]}",
            created_by=requested_by,
        )
    previous_id, document.job_id = document.job_id, job.id
    await session.commit()
    # A document being (re-)ingested is out of the search until it is ready again.
    await search_cache.changed(jobs.redis, base.tenant_id, [base.id])
    if previous_id is not None and previous_id != job.id:
        # The document's previous job, if still on its way, stops (it no longer owns the document, so it
        # writes nothing more): its work would mix two settings.
        previous = await session.get(Job, previous_id)
        if previous is not None and previous.status in ("queued", "running"):
            await cancel_job(session, jobs.queue, jobs.redis, previous, actor=requested_by)
    return job


async def add_document(
    session: AsyncSession,
    store: ObjectStore,
    base: KnowledgeBase,
    actor: Actor,
    *,
    filename: str,
    data: bytes,
    max_bytes: int,
    metadata: dict[str, Any],
    jobs: JobQueue,
    requested_by: UUID,
    source_url: str | None = None,
    field: str = "file",
) -> DocumentUploaded:
    """Store an upload in the base: checked (size, type), the file in the object store, its ingestion job submitted.

    The same content already in the base is that document (`duplicate`), and nothing is stored again. `field`
    is what refusals name: the request field the bytes came from.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"`{field}` is larger than the {max_bytes} bytes an upload may have.", field=field)
    shown_name = display_filename(filename)
    content_type = sniffed_type(shown_name, data, field)
    content_hash = hashlib.sha256(data).hexdigest()
    existing = await _by_hash(session, base, content_hash)
    if existing is not None:
        return read_as(DocumentUploaded, existing, metadata=dict(existing.attributes), duplicate=True)
    document_id = uuid7()
    object_name = f"kb/{base.id}/{document_id}/{key_filename(shown_name, Path(shown_name.lower()).suffix)}"
    document = KnowledgeDocument(
        id=document_id,
        base_id=base.id,
        filename=shown_name,
        content_type=content_type,
        size_bytes=len(data),
        content_hash=content_hash,
        object_key=object_name,
        source_url=source_url,
        attributes=metadata,
        created_by=actor.user_id,
    )
    session.add(document)
    audit_change(
        session,
        actor,
        "knowledge.document_added",
        "knowledge_document",
        document_id,
        base_id=str(base.id),
        filename=shown_name,
        size_bytes=len(data),
    )
    await _put(store, base.tenant_id, object_name, data, content_type)
    try:
        # Submitting the job commits the document with it.
        await queue_ingestion(session, jobs, base, document, requested_by=requested_by)
    except IntegrityError:
        # The same content uploaded at the same moment: the other upload's document stands, this file goes.
        await session.rollback()
        await _delete_objects(store, base.tenant_id, object_name)
        existing = await _by_hash(session, base, content_hash)
        if existing is None:
            raise
        return read_as(DocumentUploaded, existing, metadata=dict(existing.attributes), duplicate=True)
    return read_as(DocumentUploaded, document, metadata=dict(document.attributes))


# The extension a fetched document is named with when the name its server gave has none that uploads take.
_EXTENSION_OF_TYPE = {content_type: extension for extension, content_type in reversed(DOCUMENT_TYPES.items())}


def fetched_filename(fetched: Fetched) -> str:
    """The name of a document fetched from a URL: the one its server gave, with the extension of its Content-Type
    added where that name has no known one (a page at `/docs/` is `document.html`)."""
    name = display_filename(fetched.filename)
    extension = _EXTENSION_OF_TYPE.get(fetched.content_type)
    if Path(name.lower()).suffix in DOCUMENT_TYPES or extension is None:
        return name
    return f"{name or 'document'}{extension}"[-MAX_FILENAME:]


def checked_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A JSON body's `metadata` object, at most 16 KiB encoded (what `parse_metadata` allows a form's)."""
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"`metadata` is larger than {MAX_METADATA_BYTES // 1024} KiB.", field="metadata")
    return metadata


async def add_document_from_url(
    session: AsyncSession,
    store: ObjectStore,
    base: KnowledgeBase,
    actor: Actor,
    *,
    url: str,
    metadata: dict[str, Any],
    settings: Settings,
    jobs: JobQueue,
    requested_by: UUID,
) -> DocumentUploaded:
    """The document at `url`, fetched as `app.knowledge.fetch` allows, then added as an upload of its bytes is
    (`add_document`: one way in for every document); it keeps the URL it was asked for in `source_url`."""
    metadata = checked_metadata(metadata)
    allowed_hosts = tenant_policy(await own_organization(session, base.tenant_id)).knowledge_url_hosts
    # Nothing is written yet: the transaction ends before the fetch, which may take the whole fetch timeout,
    # so that slow URLs never hold pooled database connections (the tenant is set again on the next one).
    await session.commit()
    fetched = await fetch_document(
        url, allowed_hosts=allowed_hosts, max_bytes=settings.kb_max_upload_bytes, settings=settings
    )
    return await add_document(
        session,
        store,
        base,
        actor,
        filename=fetched_filename(fetched),
        data=fetched.data,
        max_bytes=settings.kb_max_upload_bytes,
        metadata=metadata,
        jobs=jobs,
        requested_by=requested_by,
        source_url=url.strip(),
        field="url",
    )


async def _put(store: ObjectStore, tenant_id: UUID, name: str, data: bytes, content_type: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lyss-kb-") as scratch:
        path = Path(scratch) / "file"
        await asyncio.to_thread(path.write_bytes, data)
        try:
            await store.put(tenant_id, name, path, content_type=content_type)
        except StorageError as error:
            raise ServiceUnavailable(error.detail) from None


async def reindex_document(
    session: AsyncSession,
    jobs: JobQueue,
    base: KnowledgeBase,
    document: KnowledgeDocument,
    actor: Actor,
    *,
    requested_by: UUID,
    reason: str = "requested",
) -> DocumentRead:
    """Run the document's ingestion again for the base's current model and chunking (audited). Chunks whose text
    is unchanged keep their vectors unless the model changed; a document already ingested so is left as it is."""
    audit_change(
        session,
        actor,
        "knowledge.document_reindexed",
        "knowledge_document",
        document.id,
        base_id=str(base.id),
        embedding_model=base.embedding_model,
        reason=reason,
    )
    await queue_ingestion(session, jobs, base, document, requested_by=requested_by)
    return document_read(document)


async def reindex_base(
    session: AsyncSession,
    jobs: JobQueue,
    base: KnowledgeBase,
    actor: Actor,
    *,
    requested_by: UUID,
    reason: str = "requested",
) -> list[DocumentRead]:
    """Re-index every document of the base (one audit event for the base); see `reindex_document`."""
    documents = list(
        await session.scalars(
            select(KnowledgeDocument).where(KnowledgeDocument.base_id == base.id).order_by(KnowledgeDocument.id)
        )
    )
    audit_change(
        session,
        actor,
        "knowledge.base_reindexed",
        "knowledge_base",
        base.id,
        name=base.name,
        embedding_model=base.embedding_model,
        documents=len(documents),
        reason=reason,
    )
    for document in documents:
        await queue_ingestion(session, jobs, base, document, requested_by=requested_by)
    await session.commit()
    return [document_read(document) for document in documents]


async def delete_document(
    session: AsyncSession,
    store: ObjectStore,
    redis: Redis,
    base: KnowledgeBase,
    document: KnowledgeDocument,
    actor: Actor,
) -> None:
    """The document with its chunks (committed first), then its file."""
    tenant_id, document_id = document.tenant_id, document.id
    await session.execute(delete(KnowledgeDocument).where(KnowledgeDocument.id == document_id))
    audit_change(
        session,
        actor,
        "knowledge.document_deleted",
        "knowledge_document",
        document_id,
        base_id=str(base.id),
        filename=document.filename,
    )
    await session.commit()
    await search_cache.changed(redis, tenant_id, [base.id])
    await _delete_objects(store, tenant_id, f"kb/{base.id}/{document_id}/")
