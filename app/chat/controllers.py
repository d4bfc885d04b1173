"""HTTP endpoints of chat: conversations of the caller, and a turn answered whole or streamed (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, JSONBody, QueryParameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_303_SEE_OTHER
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.services import is_admin
from app.auth.tokens import Principal
from app.chat import services
from app.chat.schemas import (
    AttachmentRead,
    ConversationCreate,
    ConversationDetail,
    ConversationRead,
    ConversationUpdate,
    MessagePost,
    TurnRead,
)
from app.edge import ACCEPTS_FORM
from app.errors import InvalidRequest, ServiceError
from app.gateway.client import complete, stream
from app.gateway.engine import Gateway
from app.knowledge.services import Caller
from app.observability.logging import get_logger
from app.settings import Settings
from app.storage.base import ObjectStore
from db.session import tenant_session

AuthRequest = Request[Principal, Any, State]
logger = get_logger("lyss.chat")


def _caller(request: AuthRequest) -> Caller:
    return Caller(user_id=request.user.user_id, is_admin=is_admin(request.user))


class ConversationController(Controller):
    """Each user sees and talks in their own conversations only."""

    path = "/api/conversations"
    tags = ["chat"]

    @post("/", summary="Start a conversation with a model")
    async def create(
        self, data: JSONBody[ConversationCreate], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> Response[ConversationRead]:
        conversation = await services.create_conversation(db_session, _caller(request), data)
        return Response(services.conversation_read(conversation), status_code=HTTP_201_CREATED)

    @get("/", summary="Your conversations, most recently active first")
    async def list_conversations(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        status: Annotated[Literal["active", "archived"], QueryParameter()] = "active",
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> list[ConversationRead]:
        conversations = await services.list_conversations(db_session, request.user.user_id, status=status, limit=limit)
        return [services.conversation_read(conversation) for conversation in conversations]

    @get("/{conversation_id:uuid}", summary="A conversation with its messages (since its latest summary)")
    async def read(
        self, conversation_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> ConversationDetail:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        summary = await services.latest_summary(db_session, conversation.id)
        messages = await services.messages_after(db_session, conversation.id, None)
        return ConversationDetail(
            conversation=services.conversation_read(conversation),
            messages=[services.message_read(message) for message in messages],
            summary=summary.summary_text if summary else None,
        )

    @patch("/{conversation_id:uuid}", summary="Rename, archive or change the settings of a conversation")
    async def update(
        self,
        conversation_id: FromPath[UUID],
        data: JSONBody[ConversationUpdate],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> ConversationRead:
        conversation = await services.own_conversation(
            db_session, conversation_id, request.user.user_id, for_change=True
        )
        await services.update_conversation(db_session, conversation, data, caller=_caller(request))
        return services.conversation_read(conversation)

    @delete("/{conversation_id:uuid}", summary="Delete a conversation and its messages", status_code=204)
    async def delete_conversation(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        conversation = await services.own_conversation(
            db_session, conversation_id, request.user.user_id, for_change=True
        )
        await services.delete_conversation(db_session, object_store, conversation)

    @post(
        "/{conversation_id:uuid}/attachments",
        opt={ACCEPTS_FORM: True},
        status_code=HTTP_201_CREATED,
        summary="Attach a text file (multipart field `file`; UTF-8, up to 512 KiB) to send with a later message",
    )
    async def attach(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        data: Annotated[dict[str, UploadFile], Body(media_type=RequestEncodingType.MULTI_PART)],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> AttachmentRead:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Send the file as the multipart field `file`.")
        content = await upload.read(services.ATTACHMENT_MAX_BYTES + 1)
        attachment = await services.add_attachment(
            db_session,
            object_store,
            conversation,
            filename=upload.filename or "attachment",
            content_type=upload.content_type or "",
            data=content,
        )
        return services.attachment_read(attachment)

    @get("/{conversation_id:uuid}/attachments", summary="The files attached to a conversation")
    async def list_attachments(
        self, conversation_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[AttachmentRead]:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        return [
            services.attachment_read(attachment)
            for attachment in await services.conversation_attachments(db_session, conversation)
        ]

    @get(
        "/{conversation_id:uuid}/attachments/{attachment_id:uuid}",
        summary="Download an attachment: 303 to a short-lived link",
    )
    async def download_attachment(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        attachment_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Redirect:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        attachment = await services.own_attachment(db_session, conversation, attachment_id)
        url = await object_store.download_url(
            attachment.tenant_id, attachment.object_name, filename=attachment.filename
        )
        return Redirect(url, status_code=HTTP_303_SEE_OTHER)

    @delete(
        "/{conversation_id:uuid}/attachments/{attachment_id:uuid}",
        status_code=204,
        summary="Remove an attachment (the file too)",
    )
    async def remove_attachment(
        self,
        object_store: NamedDependency[ObjectStore],
        conversation_id: FromPath[UUID],
        attachment_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        attachment = await services.own_attachment(db_session, conversation, attachment_id)
        await services.remove_attachment(db_session, object_store, attachment)

    @post(
        "/{conversation_id:uuid}/messages",
        summary="Send a message; the answer comes whole, or as server-sent events with stream=true",
        status_code=200,
    )
    async def send(
        self,
        gateway: NamedDependency[Gateway],
        job_queue: NamedDependency[RedisQueue],
        object_store: NamedDependency[ObjectStore],
        settings: NamedDependency[Settings],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        conversation_id: FromPath[UUID],
        data: JSONBody[MessagePost],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> TurnRead | ServerSentEvent:
        conversation = await services.own_conversation(db_session, conversation_id, request.user.user_id)
        attached = await services.attached_texts(db_session, object_store, conversation, data.attachment_ids)
        turn = await services.begin_turn(
            db_session,
            gateway,
            conversation,
            data.content,
            caller=_caller(request),
            knowledge_tokens=settings.chat_knowledge_tokens,
            attached=attached,
        )
        request_id = request.scope.get("state", {}).get("request_id")
        if data.stream:
            chunks = await stream(gateway, turn.token, turn.body, request_id)
            store = _TurnStore(session_maker, job_queue, settings, request.user, conversation.id, turn)
            return ServerSentEvent(_stream_turn(store, chunks))
        answer = await complete(gateway, turn.token, turn.body, request_id)
        choice = (answer.get("choices") or [{}])[0]
        message = await services.finish_turn(
            db_session,
            conversation,
            turn,
            content=str((choice.get("message") or {}).get("content") or ""),
            usage=answer.get("usage"),
            status="complete",
            model=answer.get("model") or conversation.model,
        )
        memory_job = await services.after_turn(db_session, job_queue, settings, conversation, turn, message)
        return TurnRead(
            user_message=services.message_read(turn.user_message),
            assistant_message=services.message_read(message),
            memory_job_id=memory_job,
        )


async def _stream_turn(
    store: _TurnStore, chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[ServerSentEventMessage]:
    """Relay the answer as `delta` events, then store it and send `done` (or `error`, if it broke off).

    Whatever ends the stream, including the client going away, what arrived is stored.
    """
    received: list[str] = []
    usage: dict[str, Any] | None = None
    status = "incomplete"
    error: str | None = None
    try:
        async for delta, chunk_usage, chunk_error in services.text_of(chunks):
            if chunk_error is not None:
                error = chunk_error
                break
            if chunk_usage is not None:
                usage = chunk_usage
            if delta:
                received.append(delta)
                yield ServerSentEventMessage(event="delta", data=msgspec.json.encode({"content": delta}).decode())
        else:
            status = "complete"
    finally:
        with anyio.CancelScope(shield=True):
            stored = await store.finish("".join(received), usage, status)
    if error is not None or stored is None:
        message = error or "The answer could not be stored."
        yield ServerSentEventMessage(event="error", data=msgspec.json.encode({"message": message}).decode())
    else:
        yield ServerSentEventMessage(event="done", data=msgspec.json.encode(stored).decode())


class _TurnStore(msgspec.Struct, frozen=True):
    """Where a streamed answer is stored once it ends: a session of its own (the request's is gone by then)."""

    session_maker: async_sessionmaker[AsyncSession]
    job_queue: RedisQueue
    settings: Settings
    principal: Principal
    conversation_id: UUID
    turn: services.Turn

    async def finish(self, content: str, usage: dict[str, Any] | None, status: str) -> TurnRead | None:
        try:
            async with tenant_session(self.session_maker, self.principal.tenant_id) as session:
                conversation = await services.own_conversation(session, self.conversation_id, self.principal.user_id)
                message = await services.finish_turn(
                    session,
                    conversation,
                    self.turn,
                    content=content,
                    usage=usage,
                    status=status,
                    model=conversation.model,
                )
                memory_job = (
                    await services.after_turn(session, self.job_queue, self.settings, conversation, self.turn, message)
                    if status == "complete"
                    else None
                )
                return TurnRead(
                    user_message=services.message_read(self.turn.user_message),
                    assistant_message=services.message_read(message),
                    memory_job_id=memory_job,
                )
        except ServiceError as failure:  # e.g. the conversation was deleted while it streamed
            logger.warning("streamed answer not stored", error=failure.detail)
            return None
