"""Portal pages for a user's own conversations: list, read with messages, rename, archive, delete."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat import services
from app.chat.schemas import ConversationUpdate
from app.knowledge.services import Caller
from app.portal.forms import FormInvalid, FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other
from app.storage.base import ObjectStore

CONVERSATIONS = f"{PORTAL}/conversations"
# As many as the API lists at once; older ones stay reachable through the API's pages.
LISTED_CONVERSATIONS = 200


def _caller(viewer: Viewer) -> Caller:
    return Caller(user_id=viewer.user.id, is_admin=viewer.is_admin)


class ConversationPages(Controller):
    path = "/conversations"
    dependencies = {"viewer": Provide(provide_viewer)}

    @get("/", summary="Conversations")
    async def list_conversations(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        status: FromQuery[str] = "active",
    ) -> Template:
        shown: Literal["active", "archived"] = "archived" if status == "archived" else "active"
        conversations = await services.list_conversations(
            db_session, viewer.user.id, status=shown, limit=LISTED_CONVERSATIONS
        )
        return page(
            viewer, "conversations/list.html", conversations=conversations, status=shown, limit=LISTED_CONVERSATIONS
        )

    async def _conversation_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        conversation_id: UUID,
        *,
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        conversation = await services.own_conversation(db_session, conversation_id, viewer.user.id)
        summary = await services.latest_summary(db_session, conversation.id)
        return page(
            viewer,
            "conversations/detail.html",
            status_code=status_code if errors else 200,
            conversation=conversation,
            messages=await services.messages_after(db_session, conversation.id, None),
            summary=summary.summary_text if summary else None,
            values=values or {"title": conversation.title},
            errors=errors or {},
        )

    @get("/{conversation_id:uuid}", summary="A conversation")
    async def show_conversation(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        return await self._conversation_page(viewer, db_session, conversation_id)

    @post("/{conversation_id:uuid}", summary="Rename a conversation")
    async def rename_conversation(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        conversation = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        values = {"title": str((await request.form()).get("title") or "").strip()}
        async with FormSubmission(db_session) as submission:
            # The API's update leaves out an empty field; renaming to nothing is a mistake here.
            if not values["title"]:
                raise FormInvalid({"title": "This field is required."})
            await services.update_conversation(
                db_session, conversation, parse(ConversationUpdate, values), caller=_caller(viewer)
            )
        if submission.refused:
            return await self._conversation_page(
                viewer,
                db_session,
                conversation_id,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        await db_session.commit()
        return see_other(f"{CONVERSATIONS}/{conversation_id}")

    @post("/{conversation_id:uuid}/archive", summary="Archive a conversation")
    async def archive_conversation(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        conversation = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        await services.update_conversation(
            db_session, conversation, ConversationUpdate(status="archived"), caller=_caller(viewer)
        )
        await db_session.commit()
        return see_other(f"{CONVERSATIONS}/{conversation_id}")

    @post("/{conversation_id:uuid}/unarchive", summary="Unarchive a conversation")
    async def unarchive_conversation(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        conversation = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        await services.update_conversation(
            db_session, conversation, ConversationUpdate(status="active"), caller=_caller(viewer)
        )
        await db_session.commit()
        return see_other(f"{CONVERSATIONS}/{conversation_id}")

    @post("/{conversation_id:uuid}/delete", summary="Delete a conversation")
    async def delete_conversation(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        conversation = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        await services.delete_conversation(db_session, object_store, conversation)
        return see_other(CONVERSATIONS)
