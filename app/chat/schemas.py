"""Request and response bodies of the chat API."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from app.schemas import Input

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=32000)]
SystemPrompt = Annotated[str, msgspec.Meta(max_length=20000)]
# Each turn retrieves from these knowledge bases (the caller must be able to read each).
KnowledgeBaseIds = Annotated[list[UUID], msgspec.Meta(max_length=20)]


class ConversationCreate(Input):
    # Left out: the organization's default chat model.
    model: ModelName | None = None
    title: Title = "New conversation"
    system_prompt: SystemPrompt | None = None
    temperature: Temperature = 0.7
    max_tokens: MaxTokens = 1024
    use_memory: bool = True
    knowledge_base_ids: KnowledgeBaseIds = []


class ChatDefaults(Input):
    """Per tenant (admins): what a conversation started without a model uses."""

    default_model: ModelName | None = None


class ConversationUpdate(Input):
    title: Title | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    use_memory: bool | None = None
    status: Literal["active", "archived"] | None = None
    # [] detaches them all.
    knowledge_base_ids: KnowledgeBaseIds | None = None


class ConversationRead(msgspec.Struct):
    id: UUID
    title: str
    model: str
    system_prompt: str | None
    temperature: float
    max_tokens: int
    use_memory: bool
    status: str
    message_count: int
    token_usage: int
    knowledge_base_ids: list[UUID]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class MessageRead(msgspec.Struct):
    id: UUID
    role: str
    content: str
    status: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    response_time_ms: int | None
    details: dict[str, Any]
    created_at: datetime.datetime


class ConversationDetail(msgspec.Struct):
    conversation: ConversationRead
    messages: list[MessageRead]
    summary: str | None


class MessagePost(Input):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
    stream: bool = False
    # Files uploaded to this conversation whose text goes with this message (read once, for this turn).
    attachment_ids: Annotated[list[UUID], msgspec.Meta(max_length=5)] = []


class AttachmentRead(msgspec.Struct):
    id: UUID
    filename: str
    content_type: str
    size_bytes: int
    created_at: datetime.datetime


class TurnRead(msgspec.Struct):
    user_message: MessageRead
    assistant_message: MessageRead
    # The memory extraction job this turn started, if memory is on.
    memory_job_id: UUID | None
