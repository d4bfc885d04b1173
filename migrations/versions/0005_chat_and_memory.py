"""Chat (conversations, messages, summaries) and memory (memories with vectors, associations, history).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Mirrors db.memory.INDEXED_DIMENSIONS / HALFVEC_INDEXED_DIMENSIONS as they were at this revision.
INDEXED_DIMENSIONS = (256, 384, 512, 768, 1024, 1536)
HALFVEC_INDEXED_DIMENSIONS = (3072,)


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _tenant() -> sa.Column:
    return sa.Column("tenant_id", sa.Uuid(), nullable=False)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _updated() -> sa.Column:
    return sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"],
        ["tenant_organizations.id"],
        ondelete="CASCADE",
        name=op.f(f"fk_{table}_tenant_id_tenant_organizations"),
    )


def upgrade() -> None:
    op.create_table(
        "chat_conversations",
        _id(),
        _tenant(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("temperature", sa.Float(), server_default="0.7", nullable=False),
        sa.Column("max_tokens", sa.Integer(), server_default="1024", nullable=False),
        sa.Column("use_memory", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("token_usage", sa.Integer(), server_default="0", nullable=False),
        _created(),
        _updated(),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_chat_conversations_status")),
        sa.CheckConstraint("temperature BETWEEN 0 AND 2", name=op.f("ck_chat_conversations_temperature")),
        sa.CheckConstraint("max_tokens > 0", name=op.f("ck_chat_conversations_max_tokens")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_chat_conversations_user",
            ondelete="CASCADE",
        ),
        _tenant_fk("chat_conversations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_conversations")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_chat_conversations_tenant_id_id"),
    )
    op.create_index(
        "idx_chat_conversations_user",
        "chat_conversations",
        ["tenant_id", "user_id", "status", "updated_at"],
    )
    op.create_table(
        "chat_messages",
        _id(),
        _tenant(),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="complete", nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completion_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("response_time_ms", sa.Integer(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        _created(),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_chat_messages_role")),
        sa.CheckConstraint("status IN ('complete', 'incomplete', 'failed')", name=op.f("ck_chat_messages_status")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            name="fk_chat_messages_conversation",
            ondelete="CASCADE",
        ),
        _tenant_fk("chat_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_chat_messages_tenant_id_id"),
    )
    op.create_index("idx_chat_messages_conversation", "chat_messages", ["tenant_id", "conversation_id", "created_at"])
    op.create_table(
        "chat_summaries",
        _id(),
        _tenant(),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("summary_text", sa.Text(), nullable=False),
        sa.Column("summary_type", sa.String(length=20), server_default="auto", nullable=False),
        sa.Column("covers_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        _created(),
        sa.ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["chat_conversations.tenant_id", "chat_conversations.id"],
            name="fk_chat_summaries_conversation",
            ondelete="CASCADE",
        ),
        _tenant_fk("chat_summaries"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_summaries")),
    )
    op.create_index(
        "idx_chat_summaries_conversation", "chat_summaries", ["tenant_id", "conversation_id", "covers_until"]
    )

    op.create_table(
        "memory_user_memories",
        _id(),
        _tenant(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("memory_text", sa.Text(), nullable=False),
        sa.Column("memory_hash", sa.String(length=64), nullable=False),
        sa.Column("memory_type", sa.String(length=20), server_default="fact", nullable=False),
        sa.Column("category", sa.String(length=50), nullable=True),
        sa.Column("importance_score", sa.Integer(), server_default="50", nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("source_type", sa.String(length=20), server_default="api", nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invalidation_reason", sa.Text(), nullable=True),
        sa.Column("embedding", Vector(), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('simple', memory_text)", persisted=True),
            nullable=True,
        ),
        _created(),
        _updated(),
        sa.CheckConstraint(
            "memory_type IN ('fact', 'preference', 'episodic')", name=op.f("ck_memory_user_memories_memory_type")
        ),
        sa.CheckConstraint("status IN ('active', 'invalidated')", name=op.f("ck_memory_user_memories_status")),
        sa.CheckConstraint("importance_score BETWEEN 1 AND 100", name=op.f("ck_memory_user_memories_importance")),
        sa.CheckConstraint(
            "embedding_dim IS NULL OR embedding_dim = vector_dims(embedding)",
            name=op.f("ck_memory_user_memories_embedding_dim"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_memory_user_memories_user",
            ondelete="CASCADE",
        ),
        _tenant_fk("memory_user_memories"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_user_memories")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_memory_user_memories_tenant_id_id"),
    )
    op.create_index(
        "uk_memory_user_memories_active_hash",
        "memory_user_memories",
        ["tenant_id", "user_id", "memory_hash"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("idx_memory_user_memories_user", "memory_user_memories", ["tenant_id", "user_id", "status"])
    op.create_index(
        "idx_memory_user_memories_search", "memory_user_memories", ["search_vector"], postgresql_using="gin"
    )
    # One HNSW index per embedding size: a query names the size, so it can use the index of that size.
    for dimension in INDEXED_DIMENSIONS:
        op.execute(
            f"CREATE INDEX idx_memory_user_memories_hnsw_{dimension} ON memory_user_memories "
            f"USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) "
            f"WHERE embedding_dim = {dimension} AND status = 'active'"
        )
    for dimension in HALFVEC_INDEXED_DIMENSIONS:
        op.execute(
            f"CREATE INDEX idx_memory_user_memories_hnsw_{dimension} ON memory_user_memories "
            f"USING hnsw ((embedding::halfvec({dimension})) halfvec_cosine_ops) "
            f"WHERE embedding_dim = {dimension} AND status = 'active'"
        )

    op.create_table(
        "memory_associations",
        _id(),
        _tenant(),
        sa.Column("memory_id", sa.Uuid(), nullable=False),
        sa.Column("related_memory_id", sa.Uuid(), nullable=False),
        sa.Column("association_type", sa.String(length=20), server_default="similar", nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        _created(),
        sa.CheckConstraint(
            "association_type IN ('similar', 'related', 'opposite')",
            name=op.f("ck_memory_associations_association_type"),
        ),
        sa.CheckConstraint("strength BETWEEN 0 AND 1", name=op.f("ck_memory_associations_strength")),
        sa.CheckConstraint("memory_id <> related_memory_id", name=op.f("ck_memory_associations_distinct_memories")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            name="fk_memory_associations_memory",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "related_memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            name="fk_memory_associations_related",
            ondelete="CASCADE",
        ),
        _tenant_fk("memory_associations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_associations")),
        sa.UniqueConstraint("tenant_id", "memory_id", "related_memory_id", name="uk_memory_associations_pair"),
    )
    op.create_table(
        "memory_history",
        _id(),
        _tenant(),
        sa.Column("memory_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("old_text", sa.Text(), nullable=True),
        sa.Column("new_text", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=20), nullable=False),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("source_message_id", sa.Uuid(), nullable=True),
        _created(),
        sa.CheckConstraint("event IN ('ADD', 'UPDATE', 'INVALIDATE')", name=op.f("ck_memory_history_event")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "memory_id"],
            ["memory_user_memories.tenant_id", "memory_user_memories.id"],
            name="fk_memory_history_memory",
            ondelete="CASCADE",
        ),
        _tenant_fk("memory_history"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_history")),
    )
    op.create_index("idx_memory_history_memory", "memory_history", ["tenant_id", "memory_id", "created_at"])


def downgrade() -> None:
    op.drop_table("memory_history")
    op.drop_table("memory_associations")
    op.drop_table("memory_user_memories")
    op.drop_table("chat_summaries")
    op.drop_table("chat_messages")
    op.drop_table("chat_conversations")
