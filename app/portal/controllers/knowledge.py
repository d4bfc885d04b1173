"""Portal pages for knowledge bases: the list and a new base, a base with its documents, uploads and a search box,
a document with a preview of its passages, and deletions confirmed on a page of their own."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest
from app.gateway.client import chat_token
from app.gateway.engine import Gateway
from app.knowledge import search, services
from app.knowledge.schemas import (
    BaseSearch,
    DocumentFromUrl,
    KnowledgeBaseCreate,
    KnowledgeBaseRead,
    KnowledgeBaseUpdate,
    SearchHit,
)
from app.memory.services import memory_settings, text_search_languages
from app.portal.forms import FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other, viewer_actor
from app.redis_client import RedisDependency
from app.settings import Settings
from app.storage.base import ObjectStore
from app.tenants.services import names_of_groups, user_emails

KNOWLEDGE = f"{PORTAL}/knowledge"
# How many passages a document's page previews: enough to judge the chunking, little enough to read.
PREVIEW_CHUNKS = 20
BASE_FIELDS = ("name", "description", "embedding_model", "chunk_tokens", "chunk_overlap", "language")
CREATE_FIELDS = (*BASE_FIELDS, "scope", "group_id")
# Documents still being ingested: their pages reload the list every few seconds (portal.js, `data-refresh`).
IN_PROGRESS = {"queued", "running"}
REFRESH_SECONDS = 3
SEARCH_MODES = [("hybrid", "Meaning and words"), ("vector", "Meaning only"), ("text", "Words only")]
# The search struct's fields as the search box names them.
SEARCH_FIELD_OF = {"query": "q", "rerank_model": "rerank"}
_WORD = re.compile(r"\w+")


class SearchResult(msgspec.Struct):
    """A hit as the page lists it: its passage cut into (text, is a query word) pieces to mark."""

    hit: SearchHit
    pieces: list[tuple[str, bool]]


def highlighted(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` in pieces, those that are words of `query` (or start with one, as "opens" with "open") flagged.

    Pieces, not markup: the template escapes every piece, so a passage or query holding HTML stays text."""
    words = sorted({word.casefold() for word in _WORD.findall(query) if len(word) > 1}, key=len, reverse=True)
    if not words:
        return [(text, False)] if text else []
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.IGNORECASE)
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in pattern.finditer(text):
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


def _caller(viewer: Viewer) -> services.Caller:
    return services.Caller(user_id=viewer.user.id, is_admin=viewer.is_admin)


def _values(form: Any, names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip() for name in names}


def _options(names: list[str]) -> list[tuple[str, str]]:
    return [(name, name) for name in names]


def _settings_values(base: KnowledgeBaseRead) -> dict[str, str]:
    return {name: "" if getattr(base, name) is None else str(getattr(base, name)) for name in BASE_FIELDS}


async def _owners(session: AsyncSession, viewer: Viewer, bases: list[KnowledgeBaseRead]) -> dict[UUID, str]:
    """Who owns each base, as the list shows it: a user's email, a group's name or the organization."""
    emails = await user_emails(session) if viewer.is_admin else {viewer.user.id: viewer.user.email}
    groups = await names_of_groups(session, [base.group_id for base in bases if base.group_id is not None])
    owners: dict[UUID, str] = {}
    for base in bases:
        if base.scope == "user" and base.owner_user_id is not None:
            owners[base.id] = emails.get(base.owner_user_id, "a former user")
        elif base.scope == "group" and base.group_id is not None:
            owners[base.id] = groups.get(base.group_id, "a deleted group")
        else:
            owners[base.id] = viewer.organization.name
    return owners


class KnowledgePages(Controller):
    """Every signed-in user reads the bases their scope reaches and changes those they may write."""

    path = "/knowledge"
    dependencies = {"viewer": Provide(provide_viewer)}

    async def _list_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        values: dict[str, str],
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Template:
        caller = _caller(viewer)
        bases = await services.list_bases(db_session, caller)
        scopes = [("user", "Mine")]
        groups = await services.groups_for_new_base(db_session, caller)
        if groups:
            scopes.append(("group", "A group's"))
        if viewer.is_admin:
            scopes.append(("tenant", "The organization's"))
        return page(
            viewer,
            "knowledge/list.html",
            status_code=status_code,
            bases=bases,
            owners=await _owners(db_session, viewer, bases),
            document_counts=await services.document_counts(db_session, [base.id for base in bases]),
            scopes=scopes,
            groups=[(str(group_id), name) for group_id, name in groups],
            models=_options(await services.embedding_models(db_session)),
            languages=_options(await text_search_languages(db_session)),
            values=values,
            errors=errors,
        )

    @get("/", summary="Knowledge bases")
    async def list_bases(self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]) -> Template:
        # The new base form starts from the API's defaults.
        values = {
            field.name: str(field.default)
            for field in msgspec.structs.fields(KnowledgeBaseCreate)
            if field.name in {"scope", "chunk_tokens", "chunk_overlap", "language"}
        }
        return await self._list_page(viewer, db_session, values, {})

    @post("/", summary="Create a knowledge base")
    async def create_base(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template | Response[None]:
        values = _values(await request.form(), CREATE_FIELDS)
        shaped = dict(values)
        if shaped["scope"] != "group":
            # The group select is sent whatever the scope; only a group's base has a group.
            shaped.pop("group_id")
        async with FormSubmission(db_session) as submission:
            data = parse(KnowledgeBaseCreate, shaped)
            created = await services.create_base(db_session, _caller(viewer), viewer_actor(viewer, request), data)
        if submission.refused:
            return await self._list_page(viewer, db_session, values, submission.errors, submission.status_code)
        return see_other(f"{KNOWLEDGE}/{created.id}", "knowledge_base_created")

    async def _base_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        settings: Settings,
        base_id: UUID,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
        searched: dict[str, str] | None = None,
        results: list[SearchResult] | None = None,
        search_errors: dict[str, str] | None = None,
        url: str = "",
    ) -> Template:
        caller = _caller(viewer)
        row = await services.readable_base(db_session, base_id, caller)
        base = services.base_read(row, writable=await services.is_writable(db_session, row, caller))
        documents = await services.list_documents(db_session, row)
        owner = (await _owners(db_session, viewer, [base]))[base.id]
        return page(
            viewer,
            "knowledge/detail.html",
            status_code=status_code,
            base=base,
            owner=owner,
            documents=documents,
            refreshing=any(document.status in IN_PROGRESS for document in documents),
            refresh_seconds=REFRESH_SECONDS,
            # The base's own model stays a choice even once no channel serves it, so that saving the other
            # settings does not change it.
            models=_options(sorted({*await services.embedding_models(db_session), base.embedding_model})),
            languages=_options(await text_search_languages(db_session)),
            accept=",".join(sorted(services.DOCUMENT_TYPES)),
            max_upload_bytes=settings.kb_max_upload_bytes,
            values=values if values is not None else _settings_values(base),
            errors=errors or {},
            search_modes=SEARCH_MODES,
            # Reranking needs a model: the organization's memory one (a search names no other here).
            can_rerank=(await memory_settings(db_session)).rerank_model is not None,
            searched=searched or {"q": "", "mode": "hybrid", "rerank": "", "diversity": ""},
            results=results,
            search_errors=search_errors or {},
            url=url,
        )

    @get("/{base_id:uuid}", summary="A knowledge base, its documents and a search of its passages")
    async def base_detail(
        self,
        base_id: FromPath[UUID],
        gateway: NamedDependency[Gateway],
        viewer: NamedDependency[Viewer],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        q: FromQuery[str | None] = None,
        mode: FromQuery[str] = "hybrid",
        rerank: FromQuery[str] = "",
        diversity: FromQuery[str] = "",
    ) -> Template:
        if q is None:
            return await self._base_page(viewer, db_session, settings, base_id)
        # Found first: a base out of reach is a 404 whatever the query.
        await services.readable_base(db_session, base_id, _caller(viewer))
        searched = {"q": q, "mode": mode, "rerank": rerank, "diversity": diversity}
        hits: list[SearchHit] = []
        async with FormSubmission(db_session) as submission:
            data = parse(
                BaseSearch,
                {"query": q.strip(), "mode": mode, "rerank": bool(rerank), "diversity": bool(diversity)},
            )
            hits = await search.search(
                db_session,
                gateway,
                tenant_id=viewer.principal.tenant_id,
                caller=_caller(viewer),
                base_ids=[base_id],
                request=data,
                payer=await chat_token(db_session, viewer.user.id),
            )
        return await self._base_page(
            viewer,
            db_session,
            settings,
            base_id,
            status_code=submission.status_code,
            searched=searched,
            results=None if submission.refused else [SearchResult(hit, highlighted(hit.text, q)) for hit in hits],
            search_errors={SEARCH_FIELD_OF.get(field, field): message for field, message in submission.errors.items()},
        )

    @post("/{base_id:uuid}", summary="Change a knowledge base's settings")
    async def update_base(
        self,
        base_id: FromPath[UUID],
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        viewer: NamedDependency[Viewer],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        # Found first: a base out of reach is a 404 whatever the form holds.
        base = await services.writable_base(db_session, base_id, _caller(viewer))
        values = _values(await request.form(), BASE_FIELDS)
        shaped: dict[str, Any] = dict(values)
        # An emptied description clears it; every other field is required.
        shaped["description"] = values["description"] or None
        async with FormSubmission(db_session) as submission:
            data = parse(KnowledgeBaseUpdate, shaped)
            await services.update_base(
                db_session,
                base,
                viewer_actor(viewer, request),
                data,
                jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
                requested_by=viewer.user.id,
            )
        if submission.refused:
            return await self._base_page(
                viewer, db_session, settings, base_id, values, submission.errors, submission.status_code
            )
        return see_other(f"{KNOWLEDGE}/{base_id}", "knowledge_base_saved")

    @post("/{base_id:uuid}/documents", summary="Upload a document into a knowledge base")
    async def upload_document(
        self,
        base_id: FromPath[UUID],
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        object_store: NamedDependency[ObjectStore],
        viewer: NamedDependency[Viewer],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        base = await services.writable_base(db_session, base_id, _caller(viewer))
        form = await request.form()
        uploaded = None
        async with FormSubmission(db_session) as submission:
            upload = form.get("file")
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise InvalidRequest("Choose a file to upload.", field="file")
            uploaded = await services.add_document(
                db_session,
                object_store,
                base,
                viewer_actor(viewer, request),
                filename=upload.filename,
                data=await upload.read(settings.kb_max_upload_bytes + 1),
                max_bytes=settings.kb_max_upload_bytes,
                metadata={},
                jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
                requested_by=viewer.user.id,
            )
        if submission.refused or uploaded is None:
            return await self._base_page(
                viewer, db_session, settings, base_id, None, submission.errors, submission.status_code
            )
        return see_other(f"{KNOWLEDGE}/{base_id}", "document_duplicate" if uploaded.duplicate else "document_uploaded")

    @post("/{base_id:uuid}/documents/from-url", summary="Add a document to a knowledge base from a URL")
    async def add_document_from_url(
        self,
        base_id: FromPath[UUID],
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        object_store: NamedDependency[ObjectStore],
        viewer: NamedDependency[Viewer],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        base = await services.writable_base(db_session, base_id, _caller(viewer))
        url = str((await request.form()).get("url") or "").strip()
        uploaded = None
        async with FormSubmission(db_session) as submission:
            data = parse(DocumentFromUrl, {"url": url})
            uploaded = await services.add_document_from_url(
                db_session,
                object_store,
                base,
                viewer_actor(viewer, request),
                url=data.url,
                metadata={},
                settings=settings,
                jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
                requested_by=viewer.user.id,
            )
        if submission.refused or uploaded is None:
            return await self._base_page(
                viewer, db_session, settings, base_id, None, submission.errors, submission.status_code, url=url
            )
        return see_other(f"{KNOWLEDGE}/{base_id}", "document_duplicate" if uploaded.duplicate else "document_uploaded")

    @get("/{base_id:uuid}/delete", summary="Confirm deleting a knowledge base")
    async def confirm_base_deletion(
        self, base_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        row = await services.writable_base(db_session, base_id, _caller(viewer))
        base = services.base_read(row, writable=True)
        documents = (await services.document_counts(db_session, [base.id])).get(base.id, 0)
        return page(viewer, "knowledge/delete.html", base=base, document=None, documents=documents)

    @post("/{base_id:uuid}/delete", summary="Delete a knowledge base with its documents and their files")
    async def delete_base(
        self,
        base_id: FromPath[UUID],
        object_store: NamedDependency[ObjectStore],
        redis: RedisDependency,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        base = await services.writable_base(db_session, base_id, _caller(viewer))
        await services.delete_base(db_session, object_store, redis, base, viewer_actor(viewer, request))
        return see_other(KNOWLEDGE, "knowledge_base_deleted")

    @get("/{base_id:uuid}/documents/{document_id:uuid}", summary="A document and a preview of its passages")
    async def document_detail(
        self,
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        chunk: FromQuery[UUID | None] = None,
    ) -> Template:
        caller = _caller(viewer)
        row = await services.readable_base(db_session, base_id, caller)
        base = services.base_read(row, writable=await services.is_writable(db_session, row, caller))
        document = await services.base_document(db_session, row, document_id)
        chunks = await services.chunk_preview(db_session, document, PREVIEW_CHUNKS)
        # A search result links to its passage (`?chunk=<id>#chunk-<id>`): shown after the preview when it lies
        # beyond it, so that the anchor always lands.
        shown = None
        if chunk is not None and all(preview.id != chunk for preview in chunks):
            shown = await services.document_chunk(db_session, document, chunk)
        return page(
            viewer,
            "knowledge/document.html",
            base=base,
            document=services.document_read(document),
            chunks=chunks,
            shown_chunk=shown,
            preview_size=PREVIEW_CHUNKS,
            refreshing=document.status in IN_PROGRESS,
            refresh_seconds=REFRESH_SECONDS,
        )

    @get("/{base_id:uuid}/documents/{document_id:uuid}/delete", summary="Confirm deleting a document")
    async def confirm_document_deletion(
        self,
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        row = await services.writable_base(db_session, base_id, _caller(viewer))
        document = services.document_read(await services.base_document(db_session, row, document_id))
        return page(viewer, "knowledge/delete.html", base=services.base_read(row, writable=True), document=document)

    @post("/{base_id:uuid}/documents/{document_id:uuid}/delete", summary="Delete a document, its passages and file")
    async def delete_document(
        self,
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        object_store: NamedDependency[ObjectStore],
        redis: RedisDependency,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        base = await services.writable_base(db_session, base_id, _caller(viewer))
        document = await services.base_document(db_session, base, document_id)
        await services.delete_document(db_session, object_store, redis, base, document, viewer_actor(viewer, request))
        return see_other(f"{KNOWLEDGE}/{base_id}", "document_deleted")


def knowledge_pages(max_upload_bytes: int) -> type[Controller]:
    """The pages with room for an upload of `max_upload_bytes` (LYSS_KB_MAX_UPLOAD_BYTES), as the API's own
    documents route has: a larger body is refused (413) before it is read."""
    return type(
        "KnowledgePages",
        (KnowledgePages,),
        {"request_max_body_size": max_upload_bytes + services.MULTIPART_ALLOWANCE},
    )
