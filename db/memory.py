"""Tables of the `memory_` prefix: what Lyss remembers about each user, how memories relate, and every change."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, REGCONFIG, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TenantOwned, UpdatedAt

MEMORY_TYPES = ("fact", "preference", "episodic")
MEMORY_STATUSES = ("active", "invalidated")
MEMORY_EVENTS = ("ADD", "UPDATE", "INVALIDATE")
ASSOCIATION_TYPES = ("similar", "related", "opposite")
# Dimensions with an HNSW index of their own (a partial expression index each, see migration 0005);
# vectors of any other size are still searched, exactly. 3072 is indexed as halfvec (HNSW caps vector at 2000).
INDEXED_DIMENSIONS = (256, 384, 512, 768, 1024, 1536)
HALFVEC_INDEXED_DIMENSIONS = (3072,)


class Memory(TenantOwned, UpdatedAt, Base):
    """One remembered statement about one user. A contradicted memory is invalidated, not erased."""

    __tablename__ = "memory_user_memories"
    __table_args__ = (
        CheckConstraint(f"memory_type IN {MEMORY_TYPES}", name="memory_type"),
        CheckConstraint(f"status IN {MEMORY_STATUSES}", name="status"),
        CheckConstraint("importance_score BETWEEN 1 AND 100", name="importance"),
        CheckConstraint("embedding_dim IS NULL OR embedding_dim = vector_dims(embedding)", name="embedding_dim"),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_memory_user_memories_user",
        ),
        # The memory that replaced a contradicted one, within the tenant; erasing it only drops the link.
        ForeignKeyConstraint(
            ["tenant_id", "superseded_by"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            ondelete="SET NULL (superseded_by)",
            name="fk_memory_user_memories_superseded_by",
        ),
        CheckConstraint("superseded_by <> id", name="not_self_superseded"),
        # Exact duplicates stop here, per user; an invalidated memory does not block its fact coming back.
        Index(
            "uk_memory_user_memories_active_hash",
            "tenant_id",
            "user_id",
            "memory_hash",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index("idx_memory_user_memories_user", "tenant_id", "user_id", "status"),
        Index("idx_memory_user_memories_search", "search_vector", postgresql_using="gin"),
        Index(
            "idx_memory_user_memories_expires",
            "tenant_id",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
        ),
    )

    user_id: Mapped[UUID]
    memory_text: Mapped[str] = mapped_column(Text)
    memory_hash: Mapped[str] = mapped_column(String(64))
    memory_type: Mapped[str] = mapped_column(String(20), default="fact", server_default="fact")
    category: Mapped[str | None] = mapped_column(String(50))
    importance_score: Mapped[int] = mapped_column(default=50, server_default="50")
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    source_type: Mapped[str] = mapped_column(String(20), default="api", server_default="api")
    source_id: Mapped[UUID | None]
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    invalidated_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    invalidation_reason: Mapped[str | None] = mapped_column(Text)
    superseded_by: Mapped[UUID | None]
    # Past this instant the memory is never searched, listed or put into context; `memory.prune` deletes it.
    expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    # Which agent, and which run of it, the memory belongs to (the caller's own names), to scope searches.
    agent_id: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[str | None] = mapped_column(String(100))
    # Deferred: a vector is kilobytes to fetch and parse, and only SQL ever reads it.
    embedding: Mapped[Any] = mapped_column(Vector(), nullable=True, deferred=True)
    embedding_model: Mapped[str | None] = mapped_column(String(100))
    embedding_dim: Mapped[int | None]
    # The text-search configuration (stemming, stop words) of the organization's language when it was
    # stored: `memory_language()` reads the memory settings (migration 0017).
    language: Mapped[str] = mapped_column(REGCONFIG, server_default=text("public.memory_language()"), deferred=True)
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector(language, memory_text)", persisted=True), deferred=True
    )


class MemoryAssociation(TenantOwned, Base):
    """Two memories of one user that are about the same thing (cosine similarity above the threshold)."""

    __tablename__ = "memory_associations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "memory_id", "related_memory_id", name="uk_memory_associations_pair"),
        CheckConstraint(f"association_type IN {ASSOCIATION_TYPES}", name="association_type"),
        CheckConstraint("strength BETWEEN 0 AND 1", name="strength"),
        CheckConstraint("memory_id <> related_memory_id", name="distinct_memories"),
        ForeignKeyConstraint(
            ["tenant_id", "memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            ondelete="CASCADE",
            name="fk_memory_associations_memory",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "related_memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            ondelete="CASCADE",
            name="fk_memory_associations_related",
        ),
    )

    memory_id: Mapped[UUID]
    related_memory_id: Mapped[UUID]
    association_type: Mapped[str] = mapped_column(String(20), default="similar", server_default="similar")
    strength: Mapped[float] = mapped_column(Float)


class MemoryHistory(TenantOwned, Base):
    """Every change to a memory: what it said before and after, who changed it, and from which message."""

    __tablename__ = "memory_history"
    __table_args__ = (
        CheckConstraint(f"event IN {MEMORY_EVENTS}", name="event"),
        ForeignKeyConstraint(
            ["tenant_id", "memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            ondelete="CASCADE",
            name="fk_memory_history_memory",
        ),
        Index("idx_memory_history_memory", "tenant_id", "memory_id", "created_at"),
    )

    memory_id: Mapped[UUID]
    event: Mapped[str] = mapped_column(String(20))
    old_text: Mapped[str | None] = mapped_column(Text)
    new_text: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    # "user", "admin" or "job"; the user or the job behind it.
    actor: Mapped[str] = mapped_column(String(20))
    actor_user_id: Mapped[UUID | None]
    job_id: Mapped[UUID | None]
    source_message_id: Mapped[UUID | None]
    # INVALIDATE by a contradiction: the memory that replaced this one (kept after that memory is erased).
    superseded_by: Mapped[UUID | None]
