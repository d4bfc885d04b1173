"""Conversations of one user: their records, the context sent with each turn, and what follows a turn."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from saq.queue.redis import RedisQueue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.schemas import (
    AttachmentRead,
    ChatDefaults,
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageRead,
)
from app.errors import InvalidRequest, NotFound, ServiceError, ServiceUnavailable
from app.gateway.caches import TokenInfo
from app.gateway.client import chat_token
from app.gateway.engine import Gateway
from app.jobs.services import submit_job
from app.knowledge.context import Knowledge, retrieve
from app.knowledge.services import Caller, readable_bases, still_readable
from app.memory import services as memory
from app.memory.schemas import MemoryHit
from app.observability.logging import get_logger
from app.schemas import read_as
from app.settings import Settings
from app.storage.base import ObjectStore, StorageError
from app.tenants.services import record_audit_event
from db.chat import Attachment, Conversation, Message, Summary
from db.tenant import Organization

# The turns sent with each message after the latest summary (older ones are in the summary).
CONTEXT_MESSAGES = 40
# The newest messages stay verbatim when a conversation is summarised.
KEEP_RECENT_MESSAGES = 6
logger = get_logger("lyss.chat")


def conversation_read(conversation: Conversation) -> ConversationRead:
    return read_as(ConversationRead, conversation)


def message_read(message: Message) -> MessageRead:
    return read_as(MessageRead, message)


async def chat_defaults(session: AsyncSession) -> ChatDefaults:
    organization = await session.scalar(select(Organization))
    stored = (organization.settings if organization else {}).get("chat") or {}
    return msgspec.convert(stored, ChatDefaults)


async def save_chat_defaults(session: AsyncSession, data: ChatDefaults, *, actor_user_id: UUID) -> ChatDefaults:
    """Kept in the organization's settings next to the memory settings; audited."""
    organization = await session.scalar(select(Organization).with_for_update())
    if organization is None:
        raise NotFound("No such organization.")
    organization.settings = {**organization.settings, "chat": msgspec.to_builtins(data)}
    record_audit_event(
        session,
        actor=str(actor_user_id),
        actor_user_id=actor_user_id,
        action="chat.defaults_changed",
        target_type="organization",
        target_id=organization.id,
        details=msgspec.to_builtins(data),
    )
    await session.flush()
    return data


async def _check_bases(session: AsyncSession, caller: Caller, base_ids: list[UUID]) -> list[UUID]:
    """The ids once each, every one a base the caller may read (a 404 naming the first that is not)."""
    base_ids = list(dict.fromkeys(base_ids))
    try:
        await readable_bases(session, base_ids, caller)
    except NotFound as error:
        raise NotFound(error.detail.replace("`base_ids`", "`knowledge_base_ids`"), field="knowledge_base_ids") from None
    return base_ids


async def create_conversation(session: AsyncSession, caller: Caller, data: ConversationCreate) -> Conversation:
    user_id = caller.user_id
    fields = msgspec.structs.asdict(data)
    fields["knowledge_base_ids"] = await _check_bases(session, caller, data.knowledge_base_ids)
    if data.model is None:
        fields["model"] = (await chat_defaults(session)).default_model
        if fields["model"] is None:
            raise InvalidRequest(
                "Name the `model`: this organization has no default chat model (an administrator sets it in Settings)."
            )
    conversation = Conversation(user_id=user_id, **fields)
    session.add(conversation)
    await session.flush()
    return conversation


async def own_conversation(
    session: AsyncSession, conversation_id: UUID, user_id: UUID, *, for_change: bool = False
) -> Conversation:
    """The caller's conversation; another user's (or tenant's) is simply not found.

    `for_change` locks the row until the transaction ends, so that a change and a deletion racing for it
    take turns: the later one finds it changed, or finds nothing (404).
    """
    conversation = await session.get(Conversation, conversation_id, with_for_update=for_change)
    if conversation is None or conversation.user_id != user_id:
        raise NotFound("No such conversation.")
    return conversation


async def list_conversations(
    session: AsyncSession, user_id: UUID, *, status: str, limit: int, title_contains: str | None = None
) -> list[Conversation]:
    statement = select(Conversation).where(Conversation.user_id == user_id, Conversation.status == status)
    if title_contains:
        # The words typed are literal text, not LIKE patterns.
        statement = statement.where(Conversation.title.icontains(title_contains, autoescape=True))
    return list(
        await session.scalars(statement.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit))
    )


async def chat_models(session: AsyncSession, gateway: Gateway, user_id: UUID) -> list[str]:
    """The models the user's chat key can reach, as `/v1/models` lists them for it."""
    token = await chat_token(session, user_id)
    return [str(entry["id"]) for entry in (await gateway.models(token))["data"]]


async def update_conversation(
    session: AsyncSession, conversation: Conversation, data: ConversationUpdate, *, caller: Caller
) -> None:
    if data.knowledge_base_ids is not None:
        data = msgspec.structs.replace(
            data, knowledge_base_ids=await _check_bases(session, caller, data.knowledge_base_ids)
        )
    for field, value in msgspec.structs.asdict(data).items():
        if value is not None:
            setattr(conversation, field, value)
    await session.flush()
    # Reloaded (updated_at) while the row is still this transaction's: after the commit it may be gone.
    await session.refresh(conversation)


async def latest_summary(session: AsyncSession, conversation_id: UUID) -> Summary | None:
    return await session.scalar(
        select(Summary).where(Summary.conversation_id == conversation_id).order_by(Summary.covers_until.desc()).limit(1)
    )


async def messages_after(
    session: AsyncSession, conversation_id: UUID, summary: Summary | None, limit: int | None = None
) -> list[Message]:
    statement = select(Message).where(Message.conversation_id == conversation_id, Message.status != "failed")
    if summary is not None:
        statement = statement.where(Message.created_at > summary.covers_until)
    statement = statement.order_by(Message.created_at.desc(), Message.id.desc())
    if limit is not None:
        statement = statement.limit(limit)
    return list(reversed(list(await session.scalars(statement))))


class Turn(msgspec.Struct):
    """What a turn needs after the user's message is stored: the call's body and the memories it used."""

    user_message: Message
    token: TokenInfo
    body: dict[str, Any]
    memory_ids: list[str]
    # Each memory's score in the search that chose it (`MemoryHit.fused_score`), in the same order.
    memory_scores: list[float]
    started: float
    knowledge: Knowledge = msgspec.field(default_factory=Knowledge)


async def _relevant_memories(
    session: AsyncSession, gateway: Gateway, conversation: Conversation, text: str
) -> list[MemoryHit]:
    settings = await memory.memory_settings(session)
    if not settings.enabled or settings.chat_memories == 0:
        return []
    try:
        found = await memory.find_memories(
            session,
            gateway,
            tenant_id=conversation.tenant_id,
            author_id=conversation.user_id,
            owner=conversation.user_id,
            query=text,
            limit=settings.chat_memories,
            settings=settings,
            words_if_embedding_fails=True,
        )
    except ServiceError as error:
        # Memory makes answers better; its failure must not stop the conversation.
        logger.warning("memories left out of a chat turn", error=error.detail)
        return []
    for notice in found.notices:
        logger.warning("memories of a chat turn found with less than asked", notice=notice)
    logger.info(
        "memories put into a chat turn",
        conversation_id=str(conversation.id),
        count=len(found.hits),
        scores=[round(hit.fused_score, 4) for hit in found.hits],
    )
    return found.hits


async def begin_turn(
    session: AsyncSession,
    gateway: Gateway,
    conversation: Conversation,
    content: str,
    *,
    caller: Caller,
    knowledge_tokens: int,
    attached: list[tuple[Attachment, str]] | None = None,
) -> Turn:
    """Store the user's message (committed: never lost, whatever happens to the call) and build the call.

    `attached` files (with their text) go with this message to the model; the message records which. The
    conversation's knowledge bases (those still there and readable by `caller`) are searched with the message,
    and their best sections go into the system context, numbered, within `knowledge_tokens`.
    """
    if not content.strip():
        raise InvalidRequest("The message is empty.")
    if conversation.status != "active":
        raise InvalidRequest("This conversation is archived; unarchive it to continue.")
    attached = attached or []
    user_message = Message(
        conversation_id=conversation.id,
        role="user",
        content=content,
        details={"attachments": [str(attachment.id) for attachment, _ in attached]} if attached else {},
    )
    session.add(user_message)
    conversation.message_count += 1
    token = await chat_token(session, conversation.user_id)
    await session.commit()
    started = time.perf_counter()
    memories = await _relevant_memories(session, gateway, conversation, content) if conversation.use_memory else []
    knowledge = await retrieve(
        session,
        gateway,
        tenant_id=conversation.tenant_id,
        caller=caller,
        base_ids=await still_readable(session, list(conversation.knowledge_base_ids), caller),
        question=content,
        budget_tokens=knowledge_tokens,
    )
    system_parts = [conversation.system_prompt] if conversation.system_prompt else []
    if memories:
        remembered = "\n".join(f"- {hit.memory.text}" for hit in memories)
        system_parts.append(f"What you remember about the user (use it when relevant):\n{remembered}")
    if knowledge.text:
        system_parts.append(knowledge.text)
    summary = await latest_summary(session, conversation.id)
    if summary is not None:
        system_parts.append(f"Summary of the earlier conversation:\n{summary.summary_text}")
    history = await messages_after(session, conversation.id, summary, CONTEXT_MESSAGES)
    messages = [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
    messages += [{"role": message.role, "content": message.content} for message in history]
    if attached:
        files = "".join(f"\n\n--- Attached file: {attachment.filename} ---\n{text}" for attachment, text in attached)
        messages[-1] = {"role": "user", "content": f"{content}{files}"}
    # End the reads' transaction: its connection goes back to the pool instead of waiting idle in transaction
    # while the provider thinks (seconds, for some models), and a stream's first token does not wait for a
    # COMMIT before the response starts.
    await session.commit()
    body = {
        "model": conversation.model,
        "messages": messages,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
    }
    return Turn(
        user_message=user_message,
        token=token,
        body=body,
        memory_ids=[str(hit.memory.id) for hit in memories],
        memory_scores=[round(hit.fused_score, 4) for hit in memories],
        started=started,
        knowledge=knowledge,
    )


async def finish_turn(
    session: AsyncSession,
    conversation: Conversation,
    turn: Turn,
    *,
    content: str,
    usage: dict[str, Any] | None,
    status: str,
    model: str | None,
) -> Message:
    """Store the answer (what arrived of it, if it broke off) and its usage on the conversation."""
    prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
    completion_tokens = int((usage or {}).get("completion_tokens") or 0)
    answer = Message(
        conversation_id=conversation.id,
        role="assistant",
        content=content,
        status=status,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        response_time_ms=int((time.perf_counter() - turn.started) * 1000),
        details=_answer_details(turn),
    )
    session.add(answer)
    conversation.message_count += 1
    conversation.token_usage += prompt_tokens + completion_tokens
    await session.commit()
    return answer


def _answer_details(turn: Turn) -> dict[str, Any]:
    details: dict[str, Any] = {"memories": turn.memory_ids, "memory_scores": turn.memory_scores}
    if turn.knowledge.citations:
        details["citations"] = msgspec.to_builtins(turn.knowledge.citations)
    if turn.knowledge.error is not None:
        details["knowledge_error"] = turn.knowledge.error
    return details


async def after_turn(
    session: AsyncSession,
    queue: RedisQueue,
    settings: Settings,
    conversation: Conversation,
    turn: Turn,
    answer: Message,
) -> UUID | None:
    """Start memory extraction for the turn, and a summary when enough messages followed the last one."""
    memory_job: UUID | None = None
    memory_settings = await memory.memory_settings(session)
    if conversation.use_memory and memory_settings.enabled and memory_settings.llm_model and answer.content:
        job, _ = await submit_job(
            session,
            queue,
            settings,
            tenant_id=conversation.tenant_id,
            kind="memory.extract",
            payload={
                "user_id": str(conversation.user_id),
                "messages": [
                    {"role": "user", "content": turn.user_message.content},
                    {"role": "assistant", "content": answer.content},
                ],
                "source_type": "chat",
                "source_id": str(conversation.id),
                "source_message_id": str(turn.user_message.id),
            },
            idempotency_key=f"chat-turn:{answer.id}",
            created_by=conversation.user_id,
        )
        memory_job = job.id
    summary = await latest_summary(session, conversation.id)
    unsummarised = conversation.message_count - (summary.message_count if summary else 0) - KEEP_RECENT_MESSAGES
    if unsummarised >= settings.chat_summary_every_messages:
        await submit_job(
            session,
            queue,
            settings,
            tenant_id=conversation.tenant_id,
            kind="chat.summarize",
            payload={"conversation_id": str(conversation.id)},
            idempotency_key=f"chat-summary:{conversation.id}:{conversation.message_count}",
            created_by=conversation.user_id,
        )
    return memory_job


async def text_of(
    chunks: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[tuple[str, dict[str, Any] | None, str | None]]:
    """(text delta, usage, error message) per chunk of a chat stream."""
    async for chunk in chunks:
        if "error" in chunk:
            yield "", None, str((chunk["error"] or {}).get("message") or "The provider's stream broke off.")
            continue
        delta = "".join(str((choice.get("delta") or {}).get("content") or "") for choice in chunk.get("choices") or [])
        yield delta, chunk.get("usage"), None


# --- attachments ---------------------------------------------------------------------------------

ATTACHMENT_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json")
ATTACHMENT_MAX_BYTES = 512 * 1024
_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def attachment_read(attachment: Attachment) -> AttachmentRead:
    return read_as(AttachmentRead, attachment)


async def add_attachment(
    session: AsyncSession,
    store: ObjectStore,
    conversation: Conversation,
    *,
    filename: str,
    content_type: str,
    data: bytes,
) -> Attachment:
    """A text file for this conversation: checked (type, size, UTF-8), stored, recorded."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in ATTACHMENT_TYPES:
        raise InvalidRequest(f"Attach text files ({', '.join(ATTACHMENT_TYPES)}); got '{media_type or 'none'}'.")
    if not data:
        raise InvalidRequest("The file is empty.")
    if len(data) > ATTACHMENT_MAX_BYTES:
        raise InvalidRequest(f"The file is larger than {ATTACHMENT_MAX_BYTES // 1024} KiB.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The file is not UTF-8 text.") from None
    name = _UNSAFE_FILENAME.sub("_", filename.rsplit("/", 1)[-1]).strip()[:255] or "attachment"
    attachment = Attachment(
        conversation_id=conversation.id, filename=name, content_type=media_type, size_bytes=len(data), object_name=""
    )
    session.add(attachment)
    await session.flush()
    attachment.object_name = f"attachments/{conversation.id}/{attachment.id}"
    with tempfile.TemporaryDirectory(prefix="lyss-attachment-") as scratch:
        path = Path(scratch) / "file"
        await asyncio.to_thread(path.write_bytes, data)
        try:
            await store.put(conversation.tenant_id, attachment.object_name, path, content_type=media_type)
        except StorageError as error:
            raise ServiceUnavailable(error.detail) from None
    await session.flush()
    return attachment


async def conversation_attachments(session: AsyncSession, conversation: Conversation) -> list[Attachment]:
    return list(
        await session.scalars(
            select(Attachment).where(Attachment.conversation_id == conversation.id).order_by(Attachment.created_at)
        )
    )


async def own_attachment(session: AsyncSession, conversation: Conversation, attachment_id: UUID) -> Attachment:
    attachment = await session.get(Attachment, attachment_id)
    if attachment is None or attachment.conversation_id != conversation.id:
        raise NotFound("No such attachment in this conversation.")
    return attachment


async def attached_texts(
    session: AsyncSession, store: ObjectStore, conversation: Conversation, attachment_ids: list[UUID]
) -> list[tuple[Attachment, str]]:
    """The named attachments of this conversation with their text, in the order given."""
    found = []
    for attachment_id in dict.fromkeys(attachment_ids):
        attachment = await own_attachment(session, conversation, attachment_id)
        try:
            data = await store.read(conversation.tenant_id, attachment.object_name)
        except StorageError as error:
            raise ServiceUnavailable(error.detail) from None
        found.append((attachment, data.decode("utf-8")))
    return found


async def remove_attachment(session: AsyncSession, store: ObjectStore, attachment: Attachment) -> None:
    """The attachment's row, then its file: the deletion is committed first, so no row outlives its file."""
    tenant_id, name = attachment.tenant_id, attachment.object_name
    await session.delete(attachment)
    await session.commit()
    await store.delete(tenant_id, name)


async def delete_conversation(session: AsyncSession, store: ObjectStore, conversation: Conversation) -> None:
    """The conversation with its messages, summaries and attachments (rows and stored files)."""
    files = [
        (attachment.tenant_id, attachment.object_name)
        for attachment in await conversation_attachments(session, conversation)
    ]
    await session.delete(conversation)
    # Committed before the files go, so that a failed commit never leaves rows whose files are gone.
    await session.commit()
    for tenant_id, name in files:
        await store.delete(tenant_id, name)
