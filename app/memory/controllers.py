"""HTTP endpoints of memory: add, search, list, read, correct, erase, history; the tenant's memory settings."""

from __future__ import annotations

import asyncio
import datetime
import tempfile
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_303_SEE_OTHER,
    HTTP_409_CONFLICT,
)
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from app.auth.services import is_admin
from app.auth.tokens import Principal
from app.errors import Conflict, ErrorBody, InvalidRequest, NotAllowed, ServiceUnavailable
from app.gateway.engine import Gateway
from app.jobs.schemas import JobRead, job_read
from app.jobs.services import submit_job
from app.memory import services
from app.memory.schemas import (
    HistoryRead,
    MemoryAdd,
    MemoryArchive,
    MemoryBatch,
    MemoryFilters,
    MemoryHit,
    MemoryRead,
    MemorySearch,
    MemorySettings,
    MemoryType,
    MemoryUpdate,
)
from app.settings import Settings
from app.storage.base import ObjectStore, StorageError
from app.storage.services import job_file_url
from app.tenants.services import Actor

AuthRequest = Request[Principal, Any, State]
SEARCH_NOTICE_HEADER = "x-lyss-search-notice"
MAX_NOTICE_HEADER = 300


def header_safe(text: str) -> str:
    """`text` as a header value: printable ASCII on one line (anything else a space or `?`), cut short."""
    printable = "".join(char if " " <= char <= "~" else (" " if char.isspace() else "?") for char in text)
    return " ".join(printable.split())[:MAX_NOTICE_HEADER]


async def _subject(session: AsyncSession, principal: Principal, user_id: UUID | None) -> UUID:
    return await services.memory_owner(
        session, caller_id=principal.user_id, is_admin=is_admin(principal), requested=user_id
    )


def _list_filters(*, metadata: str | None, **fields: Any) -> MemoryFilters:
    """The listing's query parameters checked as search's `filters` are: a 400 names the parameter."""
    conditions: Any = None
    if metadata is not None:
        try:
            conditions = msgspec.json.decode(metadata)
        except msgspec.DecodeError:
            raise InvalidRequest("`metadata` must be a JSON object.", field="metadata") from None
    try:
        return msgspec.convert({**fields, "metadata": conditions}, MemoryFilters)
    except msgspec.ValidationError as error:
        field = _named(str(error))
        raise InvalidRequest(f"`{field}`: {error}", field=field) from None


def _named(message: str) -> str:
    """The query parameter a msgspec error is about: its path (`... - at `$.agent_id``), else `metadata`, the
    one whose checks name no path."""
    _, found, where = message.rpartition("at `$.")
    name = where.split("`")[0].split("[")[0] if found else "metadata"
    return "category" if name == "categories" else name


class MemoryController(Controller):
    """A user manages their own memories; a tenant admin can also read and erase any user's."""

    path = "/api/memories"
    tags = ["memory"]

    @get("/settings", summary="The organization's memory settings")
    async def read_settings(self, db_session: NamedDependency[AsyncSession]) -> MemorySettings:
        return await services.memory_settings(db_session)

    @put("/settings", summary="Change the organization's memory settings (admins)")
    async def write_settings(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        data: JSONBody[MemorySettings],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> MemorySettings:
        if not is_admin(request.user):
            raise NotAllowed("Only an administrator can change the memory settings.")
        saved, _ = await services.change_memory_settings(
            db_session,
            job_queue,
            settings,
            tenant_id=request.user.tenant_id,
            actor_user_id=request.user.user_id,
            data=data,
        )
        return saved

    @post(
        "/",
        summary="Remember: extract facts from messages (a job), or store a text as is (infer=false)",
        responses={
            HTTP_201_CREATED: ResponseSpec(
                MemoryRead, description="infer=false: the memory, stored as is", generate_examples=False
            ),
            HTTP_202_ACCEPTED: ResponseSpec(
                JobRead, description="The `memory.extract` job that will extract the facts", generate_examples=False
            ),
            HTTP_409_CONFLICT: ResponseSpec(
                ErrorBody,
                description="Memory is turned off for the organization, or you already have this memory",
                generate_examples=False,
            ),
        },
    )
    async def add(
        self,
        gateway: NamedDependency[Gateway],
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        data: JSONBody[MemoryAdd],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[MemoryRead | JobRead]:
        if (data.messages is None) == (data.text is None):
            raise InvalidRequest("Send either `messages` (a conversation) or `text` (one memory), not both.")
        owner = await _subject(db_session, request.user, data.user_id)
        if data.infer:
            services.check_expiry(data.expires_at)
            if not (await services.memory_settings(db_session)).enabled:
                raise Conflict("Memory is turned off for this organization.")
            turns = data.messages or [{"role": "user", "content": data.text}]  # type: ignore[list-item]
            scope = {
                "category": data.category,
                "expires_at": data.expires_at.isoformat() if data.expires_at else None,
                "agent_id": data.agent_id,
                "run_id": data.run_id,
            }
            job, _ = await submit_job(
                db_session,
                job_queue,
                settings,
                tenant_id=request.user.tenant_id,
                kind="memory.extract",
                payload={"user_id": str(owner), "messages": turns, "metadata": data.metadata, **scope},
                created_by=request.user.user_id,
            )
            return Response(job_read(job), status_code=HTTP_202_ACCEPTED)
        if data.text is None:
            raise InvalidRequest("With infer=false, send `text`: the memory to store as is.")
        memory = await services.remember(
            db_session,
            gateway,
            owner=owner,
            author=services.MemoryAuthor(
                kind="user" if owner == request.user.user_id else "admin", user_id=request.user.user_id
            ),
            text_value=data.text,
            memory_type=data.memory_type,
            importance=data.importance,
            metadata=data.metadata,
            category=data.category,
            expires_at=data.expires_at,
            agent_id=data.agent_id,
            run_id=data.run_id,
        )
        return Response(services.memory_read(memory), status_code=HTTP_201_CREATED)

    @post(
        "/batch",
        summary="Store up to 1,000 memories as written, all or none (one embedding call); 201 in input order",
    )
    async def add_batch(
        self,
        gateway: NamedDependency[Gateway],
        data: JSONBody[MemoryBatch],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> list[MemoryRead]:
        owner = await _subject(db_session, request.user, data.user_id)
        memories = await services.remember_batch(
            db_session,
            gateway,
            owner=owner,
            author=services.MemoryAuthor(
                kind="user" if owner == request.user.user_id else "admin", user_id=request.user.user_id
            ),
            items=data.memories,
        )
        return [services.memory_read(memory) for memory in memories]

    @get("/", summary="Memories, newest first (your own; admins may name a user)")
    async def list_memories(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        user_id: Annotated[UUID | None, QueryParameter()] = None,
        memory_type: Annotated[MemoryType | None, QueryParameter()] = None,
        include_invalidated: Annotated[bool, QueryParameter()] = False,
        before: Annotated[datetime.datetime | None, QueryParameter(description="Only memories created earlier")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        category: Annotated[list[str] | None, QueryParameter(description="Any of these (repeat it)")] = None,
        agent_id: Annotated[str | None, QueryParameter()] = None,
        run_id: Annotated[str | None, QueryParameter()] = None,
        created_after: Annotated[datetime.datetime | None, QueryParameter()] = None,
        created_before: Annotated[datetime.datetime | None, QueryParameter()] = None,
        metadata: Annotated[
            str | None, QueryParameter(description="Conditions on metadata: JSON, the grammar of search's filters")
        ] = None,
    ) -> list[MemoryRead]:
        filters = _list_filters(
            memory_type=memory_type,
            categories=category,
            agent_id=agent_id,
            run_id=run_id,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata,
        )
        subject = await _subject(db_session, request.user, user_id)
        memories = await services.list_memories(
            db_session,
            user_id=subject,
            include_invalidated=include_invalidated,
            filters=filters,
            limit=limit,
            before=before,
        )
        return [services.memory_read(memory) for memory in memories]

    @post(
        "/imports",
        summary="Import a memory archive (as `memory.export` writes it) for yourself or, as an admin, a user: 202",
    )
    async def import_archive(
        self,
        job_queue: NamedDependency[RedisQueue],
        object_store: NamedDependency[ObjectStore],
        settings: NamedDependency[Settings],
        data: JSONBody[MemoryArchive],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        user_id: Annotated[UUID | None, QueryParameter()] = None,
    ) -> Response[JobRead]:
        owner = await _subject(db_session, request.user, user_id)
        name = f"imports/memories-{uuid7()}.json"
        with tempfile.TemporaryDirectory(prefix="lyss-memories-") as scratch:
            path = Path(scratch) / "memories.json"
            await asyncio.to_thread(path.write_bytes, msgspec.json.encode(data))
            try:
                await object_store.put(request.user.tenant_id, name, path, content_type="application/json")
            except StorageError as error:
                raise ServiceUnavailable(error.detail) from None
        job, _ = await submit_job(
            db_session,
            job_queue,
            settings,
            tenant_id=request.user.tenant_id,
            kind="memory.import",
            payload={"user_id": str(owner), "object_name": name},
            created_by=request.user.user_id,
        )
        return Response(job_read(job), status_code=HTTP_202_ACCEPTED)

    @get("/exports/{job_id:uuid}", summary="A finished `memory.export` archive: 303 to a short-lived download URL")
    async def download_archive(
        self,
        actor: NamedDependency[Actor],
        object_store: NamedDependency[ObjectStore],
        job_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Redirect:
        url = await job_file_url(
            db_session,
            object_store,
            request.user,
            job_id,
            kind="memory.export",
            name=services.archive_name(job_id),
            filename=f"lyss-memories-{job_id}.json",
            actor=actor,
        )
        await db_session.commit()  # the download is audited; a redirect is not auto-committed
        return Redirect(url, status_code=HTTP_303_SEE_OTHER)

    @post(
        "/search",
        status_code=HTTP_200_OK,
        summary="Search by meaning and by words; score is a cosine similarity, higher is closer",
        response_headers=[
            ResponseHeader(
                name=SEARCH_NOTICE_HEADER,
                description="What the search could not do (e.g. 'Not reranked: ...'); absent when it did all",
                documentation_only=True,
            )
        ],
    )
    async def search(
        self,
        gateway: NamedDependency[Gateway],
        data: JSONBody[MemorySearch],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[list[MemoryHit]]:
        subject = await _subject(db_session, request.user, data.user_id)
        found = await services.find_memories(
            db_session,
            gateway,
            tenant_id=request.user.tenant_id,
            author_id=request.user.user_id,
            owner=subject,
            query=data.query,
            limit=data.limit,
            filters=data.filters,
        )
        headers = {SEARCH_NOTICE_HEADER: header_safe("; ".join(found.notices))} if found.notices else {}
        return Response(found.hits, headers=headers)

    @delete("/", summary="Erase every memory of a user (your own; admins may name a user)", status_code=200)
    async def erase_all(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        user_id: Annotated[UUID | None, QueryParameter()] = None,
    ) -> dict[str, int]:
        subject = await _subject(db_session, request.user, user_id)
        erased = await services.erase_and_record(db_session, actor_user_id=request.user.user_id, owner=subject)
        return {"erased": erased}

    @get("/{memory_id:uuid}", summary="One memory and the memories associated with it")
    async def read(
        self, memory_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        memory = await services.visible_memory(
            db_session, memory_id, user_id=request.user.user_id, is_admin=is_admin(request.user)
        )
        linked = await services.associations(db_session, memory)
        return {
            "memory": services.memory_read(memory),
            "associations": [{"memory_id": other, "strength": strength} for other, strength in linked],
        }

    @patch(
        "/{memory_id:uuid}",
        summary="Correct one of your memories (the old text stays in its history), or change its category or expiry",
    )
    async def correct(
        self,
        gateway: NamedDependency[Gateway],
        memory_id: FromPath[UUID],
        data: JSONBody[MemoryUpdate],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> MemoryRead:
        author = services.MemoryAuthor(kind="user", user_id=request.user.user_id)
        memory = await services.edit_memory(db_session, gateway, memory_id, author=author, data=data)
        return services.memory_read(memory)

    @delete("/{memory_id:uuid}", summary="Erase a memory with its history (your own; admins any)", status_code=204)
    async def erase(
        self, memory_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> None:
        memory = await services.visible_memory(
            db_session, memory_id, user_id=request.user.user_id, is_admin=is_admin(request.user)
        )
        await services.erase_and_record(
            db_session, actor_user_id=request.user.user_id, owner=memory.user_id, memory_id=memory_id
        )

    @get("/{memory_id:uuid}/history", summary="Every change to a memory, oldest first")
    async def history(
        self, memory_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[HistoryRead]:
        memory = await services.visible_memory(
            db_session, memory_id, user_id=request.user.user_id, is_admin=is_admin(request.user)
        )
        return [services.history_read(row) for row in await services.memory_history(db_session, memory)]
