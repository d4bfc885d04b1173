"""Tables of the `chat_` prefix: conversations, their messages, and the summaries that stand in for old turns."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TenantOwned, UpdatedAt

CONVERSATION_STATUSES = ("active", "archived")
MESSAGE_ROLES = ("user", "assistant")
MESSAGE_STATUSES = ("complete", "incomplete", "failed")


class Conversation(TenantOwned, UpdatedAt, Base):
    """One user's chat with a model; only that user reads or writes it."""

    __tablename__ = "chat_conversations"
    __table_args__ = (
        CheckConstraint(f"status IN {CONVERSATION_STATUSES}", name="status"),
        CheckConstraint("temperature BETWEEN 0 AND 2", name="temperature"),
        CheckConstraint("max_tokens > 0", name="max_tokens"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_chat_conversations_user",
        ),
        Index("idx_chat_conversations_user", "tenant_id", "user_id", "status", "updated_at"),
    )

    user_id: Mapped[UUID]
    title: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(100))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float] = mapped_column(Float, default=0.7, server_default="0.7")
    max_tokens: Mapped[int] = mapped_column(default=1024, server_default="1024")
    use_memory: Mapped[bool] = mapped_column(default=True, server_default="true")
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    message_count: Mapped[int] = mapped_column(default=0, server_default="0")
    token_usage: Mapped[int] = mapped_column(default=0, server_default="0")
    # The knowledge bases each turn retrieves from; no foreign key: a base deleted later is skipped.
    knowledge_base_ids: Mapped[list[UUID]] = mapped_column(
        ARRAY(Uuid()), default=list, server_default=text("'{}'::uuid[]")
    )


class Message(TenantOwned, Base):
    """One turn; an assistant turn records the model, its usage and how it ended."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        CheckConstraint(f"role IN {MESSAGE_ROLES}", name="role"),
        CheckConstraint(f"status IN {MESSAGE_STATUSES}", name="status"),
        ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            ondelete="CASCADE",
            name="fk_chat_messages_conversation",
        ),
        Index("idx_chat_messages_conversation", "tenant_id", "conversation_id", "created_at"),
    )

    conversation_id: Mapped[UUID]
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="complete", server_default="complete")
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    response_time_ms: Mapped[int | None]
    # Which memories were put into the context of this answer (ids), for "why did it say that".
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")


class Summary(TenantOwned, Base):
    """A summary of a conversation up to and including `covers_until` (a message's created_at)."""

    __tablename__ = "chat_summaries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            ondelete="CASCADE",
            name="fk_chat_summaries_conversation",
        ),
        Index("idx_chat_summaries_conversation", "tenant_id", "conversation_id", "covers_until"),
    )

    conversation_id: Mapped[UUID]
    summary_text: Mapped[str] = mapped_column(Text)
    summary_type: Mapped[str] = mapped_column(String(20), default="auto", server_default="auto")
    covers_until: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    message_count: Mapped[int]


class Attachment(TenantOwned, Base):
    """A file a user attached to a conversation; the bytes are in the object store under `object_name`."""

    __tablename__ = "chat_attachments"
    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="size"),
        ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            ondelete="CASCADE",
            name="fk_chat_attachments_conversation",
        ),
        Index("idx_chat_attachments_conversation", "tenant_id", "conversation_id", "created_at"),
    )

    conversation_id: Mapped[UUID]
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int]
    object_name: Mapped[str] = mapped_column(String(300))
