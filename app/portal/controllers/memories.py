"""Portal pages for memories: browse, search, add, correct and erase them; read one with its history and source."""

from __future__ import annotations

from typing import Annotated, get_args
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest
from app.gateway.engine import Gateway
from app.keyset import Keyset
from app.memory import services
from app.memory.schemas import (
    Importance,
    MemoryCorrection,
    MemoryFilters,
    MemoryHit,
    MemoryText,
    MemoryType,
    MemoryUpdate,
)
from app.portal.forms import FormInvalid, FormSubmission, parse
from app.portal.lists import PAGE_SIZE, filters_from, next_page_query, page_cursor
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other
from app.tenants.services import user_emails

SEARCH_LIMIT = 20
MEMORY_FILTERS = ("user_id", "q", "memory_type", "include_invalidated")
MEMORY_TYPES = get_args(MemoryType)


class MemoryBrowse(msgspec.Struct, frozen=True):
    """The list page's filters: whose memories (admins may pick a user), a search, a type."""

    user_id: UUID | None = None
    q: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    memory_type: MemoryType | None = None
    include_invalidated: bool = False


class EraseAll(msgspec.Struct, frozen=True):
    user_id: UUID


class MemoryWrite(msgspec.Struct, frozen=True):
    """The add form: a memory stored as written, for the viewer or (admins) another user."""

    text: MemoryText
    memory_type: MemoryType = "fact"
    importance: Importance = 50
    user_id: UUID | None = None


def _list_path(viewer: Viewer, owner: UUID, **query: str) -> str:
    """The list of `owner`'s memories; the viewer's own list needs no user in its address."""
    if owner != viewer.user.id:
        query = {"user_id": str(owner), **query}
    return f"{PORTAL}/memories" + (f"?{urlencode(query)}" if query else "")


def _erased_notice(value: str | None) -> list[tuple[str, str]]:
    if value is None or not value.isdigit():
        return []
    count = int(value)
    return [("ok", f"Erased {count} {'memory' if count == 1 else 'memories'}.")]


class MemoryPages(Controller):
    """A user sees and erases their own memories; a tenant admin can pick any user of the organization."""

    path = "/memories"
    dependencies = {"viewer": Provide(provide_viewer)}

    @get("/", summary="Memories")
    async def list_memories(
        self,
        gateway: NamedDependency[Gateway],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        query = request.query_params
        browse, errors = filters_from(query, MEMORY_FILTERS, MemoryBrowse)
        owner = await services.memory_owner(
            db_session, caller_id=viewer.user.id, is_admin=viewer.is_admin, requested=browse.user_id
        )
        filters = MemoryFilters(memory_type=browse.memory_type)
        notices = _erased_notice(query.get("erased"))
        settings = await services.memory_settings(db_session)
        status = services.memory_status(settings)
        hits: list[MemoryHit] = []
        after = None if browse.q else page_cursor(query, errors)
        if browse.q:
            found = await services.find_memories(
                db_session,
                gateway,
                tenant_id=viewer.organization.id,
                author_id=viewer.user.id,
                owner=owner,
                query=browse.q,
                limit=SEARCH_LIMIT,
                filters=filters,
                settings=settings,
                words_if_embedding_fails=True,
            )
            hits = found.hits
            notices += [("error", notice) for notice in found.notices]
        rows = (
            []
            if browse.q
            else await services.list_memories(
                db_session,
                user_id=owner,
                include_invalidated=browse.include_invalidated,
                filters=filters,
                limit=PAGE_SIZE + 1,
                before=after.created_at if after else None,
                before_id=after.id if after else None,
            )
        )
        memories = rows[:PAGE_SIZE]
        last = Keyset.of(rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else None
        users = await user_emails(db_session) if viewer.is_admin else {viewer.user.id: viewer.user.email}
        values = {name: query.get(name, "") for name in MEMORY_FILTERS} | {"user_id": str(owner)}
        return page(
            viewer,
            "memories/list.html",
            status_code=400 if errors else 200,
            owner=owner,
            owner_email=users.get(owner, ""),
            users=users,
            memory_types=MEMORY_TYPES,
            searched=bool(browse.q),
            hits=hits,
            memories=memories,
            values=values,
            errors=errors,
            notices=notices,
            status=status,
            next_query=next_page_query(values, last),
            first_page=after is None,
        )

    async def _write_page(
        self, viewer: Viewer, db_session: AsyncSession, values: dict[str, str], errors: dict[str, str], status_code: int
    ) -> Template:
        users = await user_emails(db_session) if viewer.is_admin else {viewer.user.id: viewer.user.email}
        return page(
            viewer,
            "memories/new.html",
            status_code=status_code,
            users=users,
            memory_types=MEMORY_TYPES,
            values=values,
            errors=errors,
            status=services.memory_status(await services.memory_settings(db_session)),
        )

    @get("/new", summary="Add a memory")
    async def new_memory(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template:
        requested = request.query_params.get("user_id") or str(viewer.user.id)
        values = {"user_id": requested, "memory_type": "fact", "importance": "50"}
        return await self._write_page(viewer, db_session, values, {}, 200)

    @post("/new", summary="Add a memory")
    async def add_memory(
        self,
        gateway: NamedDependency[Gateway],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = await request.form()
        values = {name: str(form.get(name) or "") for name in ("text", "memory_type", "importance", "user_id")}
        async with FormSubmission(db_session) as submission:
            data = parse(MemoryWrite, {name: value.strip() for name, value in values.items()})
            owner = await services.memory_owner(
                db_session, caller_id=viewer.user.id, is_admin=viewer.is_admin, requested=data.user_id
            )
            kind = "user" if owner == viewer.user.id else "admin"
            memory = await services.remember(
                db_session,
                gateway,
                owner=owner,
                author=services.MemoryAuthor(kind=kind, user_id=viewer.user.id),
                text_value=data.text,
                memory_type=data.memory_type,
                importance=data.importance,
            )
            await db_session.commit()
        if submission.refused:
            return await self._write_page(viewer, db_session, values, submission.errors, submission.status_code)
        return see_other(f"{PORTAL}/memories/{memory.id}")

    @get("/{memory_id:uuid}/edit", summary="Correct a memory")
    async def edit_memory(
        self, memory_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        memory = await services.visible_memory(db_session, memory_id, user_id=viewer.user.id, is_admin=False)
        return page(viewer, "memories/edit.html", memory_id=memory.id, values={"text": memory.memory_text}, errors={})

    @post("/{memory_id:uuid}/edit", summary="Correct a memory")
    async def correct_memory(
        self,
        gateway: NamedDependency[Gateway],
        memory_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        # Found first: another's memory is a 404 whatever the form holds.
        await services.visible_memory(db_session, memory_id, user_id=viewer.user.id, is_admin=False)
        form = await request.form()
        values = {"text": str(form.get("text") or "")}
        async with FormSubmission(db_session) as submission:
            data = parse(MemoryCorrection, {"text": values["text"].strip()})
            author = services.MemoryAuthor(kind="user", user_id=viewer.user.id)
            await services.edit_memory(db_session, gateway, memory_id, author=author, data=MemoryUpdate(text=data.text))
            await db_session.commit()
        if submission.refused:
            return page(
                viewer,
                "memories/edit.html",
                status_code=submission.status_code,
                memory_id=memory_id,
                values=values,
                errors=submission.errors,
            )
        return see_other(f"{PORTAL}/memories/{memory_id}")

    @get("/{memory_id:uuid}", summary="A memory and its history")
    async def memory_detail(
        self, memory_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        memory = await services.visible_memory(db_session, memory_id, user_id=viewer.user.id, is_admin=viewer.is_admin)
        linked = await services.associations(db_session, memory)
        related = await services.memory_texts(db_session, [other for other, _ in linked])
        users = await user_emails(db_session) if viewer.is_admin else {viewer.user.id: viewer.user.email}
        history = await services.memory_history(db_session, memory)
        return page(
            viewer,
            "memories/detail.html",
            memory=memory,
            owner_email=users.get(memory.user_id, ""),
            source_message_id=next((row.source_message_id for row in history if row.source_message_id), None),
            history=history,
            associations=[(other, related[other], strength) for other, strength in linked if other in related],
            users=users,
            list_path=_list_path(viewer, memory.user_id),
        )

    @post("/{memory_id:uuid}/delete", summary="Erase a memory with its history")
    async def erase_memory(
        self, memory_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Response[None]:
        memory = await services.visible_memory(db_session, memory_id, user_id=viewer.user.id, is_admin=viewer.is_admin)
        owner = memory.user_id
        erased = await services.erase_and_record(
            db_session, actor_user_id=viewer.user.id, owner=owner, memory_id=memory_id
        )
        await db_session.commit()
        return see_other(_list_path(viewer, owner, erased=str(erased)))

    @post("/erase", summary="Erase every memory of a user")
    async def erase_all(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Response[None]:
        form = await request.form()
        try:
            data = parse(EraseAll, {"user_id": str(form.get("user_id") or "")})
        except FormInvalid:
            raise InvalidRequest("Choose whose memories to erase from the memories page.") from None
        owner = await services.memory_owner(
            db_session, caller_id=viewer.user.id, is_admin=viewer.is_admin, requested=data.user_id
        )
        erased = await services.erase_and_record(db_session, actor_user_id=viewer.user.id, owner=owner)
        await db_session.commit()
        return see_other(_list_path(viewer, owner, erased=str(erased)))
