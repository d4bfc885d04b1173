"""HTTP endpoints of knowledge bases: the bases (create, list, read, change, delete) and their documents."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.services import is_admin
from app.auth.tokens import Principal
from app.edge import ACCEPTS_FORM
from app.errors import InvalidRequest
from app.gateway.client import chat_token
from app.gateway.engine import Gateway
from app.knowledge import search, services
from app.knowledge.schemas import (
    BaseSearch,
    DocumentFromUrl,
    DocumentRead,
    DocumentUploaded,
    KnowledgeBaseCreate,
    KnowledgeBaseRead,
    KnowledgeBaseUpdate,
    KnowledgeSearch,
    SearchHit,
)
from app.redis_client import RedisDependency
from app.settings import Settings
from app.storage.base import ObjectStore
from app.tenants.services import Actor

AuthRequest = Request[Principal, Any, State]


def _caller(request: AuthRequest) -> services.Caller:
    return services.Caller(user_id=request.user.user_id, is_admin=is_admin(request.user))


class KnowledgeBaseController(Controller):
    """Bases owned by a user, a group or the organization; who reads and who changes them follows the scope."""

    path = "/api/knowledge-bases"
    tags = ["knowledge"]

    @get("/", summary="The knowledge bases the caller can read")
    async def list_bases(
        self, request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[KnowledgeBaseRead]:
        return await services.list_bases(db_session, _caller(request))

    @post(
        "/", status_code=HTTP_201_CREATED, summary="Create a knowledge base (a user's, a group's or the organization's)"
    )
    async def create_base(
        self,
        data: JSONBody[KnowledgeBaseCreate],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> KnowledgeBaseRead:
        return await services.create_base(db_session, _caller(request), actor, data)

    @post("/search", status_code=HTTP_200_OK, summary="Search the passages of several knowledge bases")
    async def search_bases(
        self,
        gateway: NamedDependency[Gateway],
        data: JSONBody[KnowledgeSearch],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> list[SearchHit]:
        return await search.search(
            db_session,
            gateway,
            tenant_id=request.user.tenant_id,
            caller=_caller(request),
            base_ids=data.base_ids,
            request=data,
            payer=await chat_token(db_session, request.user.user_id),
        )

    @post("/{base_id:uuid}/search", status_code=HTTP_200_OK, summary="Search the passages of a knowledge base")
    async def search_base(
        self,
        gateway: NamedDependency[Gateway],
        base_id: FromPath[UUID],
        data: JSONBody[BaseSearch],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> list[SearchHit]:
        return await search.search(
            db_session,
            gateway,
            tenant_id=request.user.tenant_id,
            caller=_caller(request),
            base_ids=[base_id],
            request=data,
            payer=await chat_token(db_session, request.user.user_id),
        )

    @get("/{base_id:uuid}", summary="A knowledge base")
    async def read_base(
        self, base_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> KnowledgeBaseRead:
        caller = _caller(request)
        base = await services.readable_base(db_session, base_id, caller)
        return services.base_read(base, writable=await services.is_writable(db_session, base, caller))

    @patch(
        "/{base_id:uuid}",
        summary="Change a knowledge base's name, description, model, chunking or language "
        "(a new model or chunking re-indexes its documents)",
    )
    async def update_base(
        self,
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        settings: NamedDependency[Settings],
        base_id: FromPath[UUID],
        data: JSONBody[KnowledgeBaseUpdate],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> KnowledgeBaseRead:
        base = await services.writable_base(db_session, base_id, _caller(request))
        return await services.update_base(
            db_session,
            base,
            actor,
            data,
            jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
            requested_by=request.user.user_id,
        )

    @post(
        "/{base_id:uuid}/reindex",
        status_code=HTTP_202_ACCEPTED,
        summary="Ingest every document of the base again with its current embedding model and chunking",
    )
    async def reindex_base(
        self,
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        settings: NamedDependency[Settings],
        base_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> list[DocumentRead]:
        base = await services.writable_base(db_session, base_id, _caller(request))
        return await services.reindex_base(
            db_session,
            services.JobQueue(queue=job_queue, redis=redis, settings=settings),
            base,
            actor,
            requested_by=request.user.user_id,
        )

    @delete("/{base_id:uuid}", status_code=204, summary="Delete a knowledge base with its documents and their files")
    async def delete_base(
        self,
        object_store: NamedDependency[ObjectStore],
        redis: RedisDependency,
        base_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        base = await services.writable_base(db_session, base_id, _caller(request))
        await services.delete_base(db_session, object_store, redis, base, actor)


class KnowledgeDocumentController(Controller):
    """The documents of a base. Its request body limit is the upload limit's (see `document_controller`)."""

    path = "/api/knowledge-bases/{base_id:uuid}/documents"
    tags = ["knowledge"]

    @post(
        "/",
        opt={ACCEPTS_FORM: True},
        status_code=HTTP_201_CREATED,
        summary="Upload a document (multipart `file`, optional `metadata` JSON object), queued for ingestion",
        responses={
            HTTP_200_OK: ResponseSpec(
                DocumentUploaded,
                description="The base already has this content: that document, `duplicate: true`",
                generate_examples=False,
            )
        },
    )
    async def upload(
        self,
        object_store: NamedDependency[ObjectStore],
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        settings: NamedDependency[Settings],
        base_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[DocumentUploaded]:
        # The base first: a caller who may not reach it learns nothing from how their body is refused.
        base = await services.writable_base(db_session, base_id, _caller(request))
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Send the file as the multipart/form-data field `file`.", field="file")
        metadata = form.get("metadata")
        if isinstance(metadata, UploadFile):
            raise InvalidRequest("`metadata` must be a JSON object in a text field.", field="metadata")
        uploaded = await services.add_document(
            db_session,
            object_store,
            base,
            actor,
            filename=upload.filename or "",
            data=await upload.read(settings.kb_max_upload_bytes + 1),
            max_bytes=settings.kb_max_upload_bytes,
            metadata=services.parse_metadata(metadata),
            jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
            requested_by=request.user.user_id,
        )
        return Response(uploaded, status_code=HTTP_200_OK if uploaded.duplicate else HTTP_201_CREATED)

    @post(
        "/from-url",
        status_code=HTTP_201_CREATED,
        summary="Add a document fetched from a URL on a host the organization allows, queued for ingestion",
        responses={
            HTTP_200_OK: ResponseSpec(
                DocumentUploaded,
                description="The base already has this content: that document, `duplicate: true`",
                generate_examples=False,
            )
        },
    )
    async def add_from_url(
        self,
        object_store: NamedDependency[ObjectStore],
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        settings: NamedDependency[Settings],
        base_id: FromPath[UUID],
        data: JSONBody[DocumentFromUrl],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[DocumentUploaded]:
        base = await services.writable_base(db_session, base_id, _caller(request))
        uploaded = await services.add_document_from_url(
            db_session,
            object_store,
            base,
            actor,
            url=data.url,
            metadata=data.metadata,
            settings=settings,
            jobs=services.JobQueue(queue=job_queue, redis=redis, settings=settings),
            requested_by=request.user.user_id,
        )
        return Response(uploaded, status_code=HTTP_200_OK if uploaded.duplicate else HTTP_201_CREATED)

    @get("/", summary="The base's documents with their ingestion status")
    async def list_documents(
        self, base_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[DocumentRead]:
        base = await services.readable_base(db_session, base_id, _caller(request))
        return await services.list_documents(db_session, base)

    @get("/{document_id:uuid}", summary="A document of the base")
    async def read_document(
        self,
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> DocumentRead:
        base = await services.readable_base(db_session, base_id, _caller(request))
        return await services.document_view(db_session, base, document_id)

    @post(
        "/{document_id:uuid}/reindex",
        status_code=HTTP_202_ACCEPTED,
        summary="Ingest the document again with the base's current embedding model and chunking",
    )
    async def reindex_document(
        self,
        job_queue: NamedDependency[RedisQueue],
        redis: RedisDependency,
        settings: NamedDependency[Settings],
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> DocumentRead:
        base = await services.writable_base(db_session, base_id, _caller(request))
        document = await services.base_document(db_session, base, document_id)
        return await services.reindex_document(
            db_session,
            services.JobQueue(queue=job_queue, redis=redis, settings=settings),
            base,
            document,
            actor,
            requested_by=request.user.user_id,
        )

    @delete("/{document_id:uuid}", status_code=204, summary="Delete a document: its chunks and its stored file too")
    async def delete_document(
        self,
        object_store: NamedDependency[ObjectStore],
        redis: RedisDependency,
        base_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        base = await services.writable_base(db_session, base_id, _caller(request))
        document = await services.base_document(db_session, base, document_id)
        await services.delete_document(db_session, object_store, redis, base, document, actor)


def document_controller(max_upload_bytes: int) -> type[Controller]:
    """The documents controller with room for an upload of `max_upload_bytes` (LYSS_KB_MAX_UPLOAD_BYTES), above
    the request body limit of every other route: a larger body is refused (413) before it is read."""
    return type(
        "KnowledgeDocumentController",
        (KnowledgeDocumentController,),
        {"request_max_body_size": max_upload_bytes + services.MULTIPART_ALLOWANCE},
    )
