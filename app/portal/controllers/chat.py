"""The chat page: a user's conversations, one open with its transcript, settings and a box to write in."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat import services
from app.chat.schemas import ConversationCreate, ConversationRead, ConversationUpdate, MessageRead
from app.gateway.engine import Gateway
from app.knowledge.services import Caller, list_bases
from app.memory.services import memory_settings, memory_status, memory_texts
from app.portal.forms import FormInvalid, FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other
from app.storage.base import ObjectStore

CHAT = f"{PORTAL}/chat"
LISTED_CONVERSATIONS = 100
SEARCH_MAX_LENGTH = 200


def _caller(viewer: Viewer) -> Caller:
    return Caller(user_id=viewer.user.id, is_admin=viewer.is_admin)


class UsedMemory(msgspec.Struct, frozen=True):
    id: UUID
    # None when the memory was erased since the answer used it.
    text: str | None


class ChatMessage(msgspec.Struct, frozen=True):
    message: MessageRead
    memories: list[UsedMemory]
    # The names of the files sent with a user's message (those still attached).
    attachments: list[str]


def _memory_ids(message: MessageRead) -> list[UUID]:
    ids = []
    for value in message.details.get("memories") or []:
        try:
            ids.append(UUID(str(value)))
        except ValueError:
            continue
    return ids


class ChatPages(Controller):
    path = "/chat"
    dependencies = {"viewer": Provide(provide_viewer)}

    async def _chat_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        gateway: Gateway,
        *,
        conversation_id: UUID | None = None,
        status: str = "active",
        search: str = "",
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        shown: Literal["active", "archived"] = "archived" if status == "archived" else "active"
        search = search.strip()[:SEARCH_MAX_LENGTH]
        conversations = [
            services.conversation_read(row)
            for row in await services.list_conversations(
                db_session, viewer.user.id, status=shown, limit=LISTED_CONVERSATIONS, title_contains=search or None
            )
        ]
        models = await services.chat_models(db_session, gateway, viewer.user.id)
        default_model = (await services.chat_defaults(db_session)).default_model
        conversation: ConversationRead | None = None
        transcript: list[ChatMessage] = []
        if conversation_id is not None:
            row = await services.own_conversation(db_session, conversation_id, viewer.user.id)
            conversation = services.conversation_read(row)
            messages = [
                services.message_read(message) for message in await services.messages_after(db_session, row.id, None)
            ]
            texts = await memory_texts(db_session, [id_ for m in messages for id_ in _memory_ids(m)])
            files = {
                str(attachment.id): attachment.filename
                for attachment in await services.conversation_attachments(db_session, row)
            }
            transcript = [
                ChatMessage(
                    message,
                    [UsedMemory(id_, texts.get(id_)) for id_ in _memory_ids(message)],
                    [files[id_] for id_ in message.details.get("attachments") or [] if id_ in files],
                )
                for message in messages
            ]
            if conversation.model not in models:
                # Kept selectable, so that saving other settings does not silently change the model.
                models = [conversation.model, *models]
        settings_values = (
            {
                "title": conversation.title,
                "model": conversation.model,
                "system_prompt": conversation.system_prompt or "",
                "temperature": str(conversation.temperature),
                "knowledge_base_ids": [str(base_id) for base_id in conversation.knowledge_base_ids],
            }
            if conversation
            else {}
        )
        # Without a default the user may use, the form starts on a model they may: "Organization default"
        # would be refused (there is none) or answer with a model they cannot reach.
        usable_default = default_model if default_model in models else (models[0] if models else "")
        new_values = {"title": "", "model": usable_default}
        return page(
            viewer,
            "chat/chat.html",
            status_code=status_code if errors else 200,
            conversations=conversations,
            conversation=conversation,
            transcript=transcript,
            models=models,
            status=shown,
            search=search,
            limit=LISTED_CONVERSATIONS,
            values={**(new_values if conversation is None else settings_values), **(values or {})},
            errors=errors or {},
            memory_status=memory_status(await memory_settings(db_session)),
            # (value, name) of the bases the user can read, the conversation's settings' choices.
            knowledge_bases=[(str(base.id), base.name) for base in await list_bases(db_session, _caller(viewer))]
            if conversation
            else [],
        )

    @get("/", summary="Chat")
    async def chat(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        gateway: NamedDependency[Gateway],
        status: FromQuery[str] = "active",
        q: FromQuery[str] = "",
    ) -> Template:
        return await self._chat_page(viewer, db_session, gateway, status=status, search=q)

    @get("/{conversation_id:uuid}", summary="A conversation in the chat")
    async def conversation(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        gateway: NamedDependency[Gateway],
        status: FromQuery[str] = "active",
        q: FromQuery[str] = "",
    ) -> Template:
        return await self._chat_page(
            viewer, db_session, gateway, conversation_id=conversation_id, status=status, search=q
        )

    @post("/", summary="Start a conversation")
    async def start(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        gateway: NamedDependency[Gateway],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = await request.form()
        values = {name: str(form.get(name) or "").strip() for name in ("title", "model")}
        async with FormSubmission(db_session) as submission:
            models = await services.chat_models(db_session, gateway, viewer.user.id)
            if values["model"] and values["model"] not in models:
                raise FormInvalid({"model": "Choose one of the models you may use."})
            data = parse(ConversationCreate, values)
            conversation = await services.create_conversation(db_session, _caller(viewer), data)
        if submission.refused:
            return await self._chat_page(
                viewer, db_session, gateway, values=values, errors=submission.errors, status_code=submission.status_code
            )
        await db_session.commit()
        return see_other(f"{CHAT}/{conversation.id}")

    @post("/{conversation_id:uuid}", summary="Change a conversation's title, model, system prompt, temperature")
    async def change(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        gateway: NamedDependency[Gateway],
        request: PortalRequest,
    ) -> Template | Response[None]:
        row = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        form = await request.form()
        values: dict[str, Any] = {
            name: str(form.get(name) or "").strip() for name in ("title", "model", "system_prompt", "temperature")
        }
        values["knowledge_base_ids"] = [str(value) for value in form.getall("knowledge_base_ids", [])]
        async with FormSubmission(db_session) as submission:
            models = await services.chat_models(db_session, gateway, viewer.user.id)
            if not values["title"]:
                raise FormInvalid({"title": "This field is required."})
            if values["model"] not in {*models, row.model}:
                raise FormInvalid({"model": "Choose one of the models you may use."})
            data = parse(ConversationUpdate, values)
            # An empty prompt clears it (the API's update leaves an absent field as it is).
            data = msgspec.structs.replace(data, system_prompt=values["system_prompt"])
            await services.update_conversation(db_session, row, data, caller=_caller(viewer))
        if submission.refused:
            return await self._chat_page(
                viewer,
                db_session,
                gateway,
                conversation_id=conversation_id,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        await db_session.commit()
        return see_other(f"{CHAT}/{conversation_id}")

    async def _set_status(
        self, db_session: AsyncSession, viewer: Viewer, conversation_id: UUID, status: Literal["active", "archived"]
    ) -> Response[None]:
        row = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        await services.update_conversation(db_session, row, ConversationUpdate(status=status), caller=_caller(viewer))
        await db_session.commit()
        return see_other(f"{CHAT}/{conversation_id}")

    @post("/{conversation_id:uuid}/archive", summary="Archive a conversation")
    async def archive(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        return await self._set_status(db_session, viewer, conversation_id, "archived")

    @post("/{conversation_id:uuid}/unarchive", summary="Unarchive a conversation")
    async def unarchive(
        self,
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        return await self._set_status(db_session, viewer, conversation_id, "active")

    @post("/{conversation_id:uuid}/delete", summary="Delete a conversation")
    async def delete(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        row = await services.own_conversation(db_session, conversation_id, viewer.user.id, for_change=True)
        await services.delete_conversation(db_session, object_store, row)
        return see_other(CHAT)
