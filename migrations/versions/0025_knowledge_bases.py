"""Knowledge bases: the kb_ tables (bases, documents, chunks with vectors of any size and full text).

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-30 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Mirrors db.knowledge.INDEXED_DIMENSIONS / HALFVEC_INDEXED_DIMENSIONS as they were at this revision.
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


def _created_by_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "created_by"],
        ["auth_users.tenant_id", "auth_users.id"],
        ondelete="SET NULL (created_by)",
        name=f"fk_{table}_created_by",
    )


def upgrade() -> None:
    op.create_table(
        "kb_bases",
        _id(),
        _tenant(),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("owner_user_id", sa.Uuid(), nullable=True),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=False),
        sa.Column("chunk_tokens", sa.Integer(), server_default="400", nullable=False),
        sa.Column("chunk_overlap", sa.Integer(), server_default="60", nullable=False),
        sa.Column("language", sa.String(length=63), server_default="english", nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        _created(),
        _updated(),
        sa.CheckConstraint("scope IN ('user', 'group', 'tenant')", name=op.f("ck_kb_bases_scope")),
        sa.CheckConstraint(
            "(scope = 'user' AND owner_user_id IS NOT NULL AND group_id IS NULL)"
            " OR (scope = 'group' AND group_id IS NOT NULL AND owner_user_id IS NULL)"
            " OR (scope = 'tenant' AND owner_user_id IS NULL AND group_id IS NULL)",
            name=op.f("ck_kb_bases_scope_owner"),
        ),
        sa.CheckConstraint("chunk_tokens BETWEEN 64 AND 2000", name=op.f("ck_kb_bases_chunk_tokens")),
        sa.CheckConstraint(
            "chunk_overlap >= 0 AND chunk_overlap * 2 <= chunk_tokens", name=op.f("ck_kb_bases_chunk_overlap")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "owner_user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_kb_bases_owner",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            ondelete="CASCADE",
            name="fk_kb_bases_group",
        ),
        _created_by_fk("kb_bases"),
        _tenant_fk("kb_bases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_bases")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_kb_bases_tenant_id_id"),
        sa.UniqueConstraint(
            "tenant_id",
            "owner_user_id",
            "group_id",
            "name",
            name="uk_kb_bases_owner_name",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index("idx_kb_bases_owner", "kb_bases", ["tenant_id", "owner_user_id"])
    op.create_index("idx_kb_bases_group", "kb_bases", ["tenant_id", "group_id"])

    op.create_table(
        "kb_documents",
        _id(),
        _tenant(),
        sa.Column("base_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="queued", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=True),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        _created(),
        _updated(),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'ready', 'failed', 'canceled')", name=op.f("ck_kb_documents_status")
        ),
        sa.CheckConstraint("size_bytes >= 0 AND chunk_count >= 0", name=op.f("ck_kb_documents_counts")),
        sa.CheckConstraint("content_hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_kb_documents_content_hash")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "base_id"],
            ["kb_bases.tenant_id", "kb_bases.id"],
            ondelete="CASCADE",
            name="fk_kb_documents_base",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["tenant_jobs.tenant_id", "tenant_jobs.id"],
            ondelete="SET NULL (job_id)",
            name="fk_kb_documents_job",
        ),
        _created_by_fk("kb_documents"),
        _tenant_fk("kb_documents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_documents")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_kb_documents_tenant_id_id"),
        sa.UniqueConstraint("base_id", "content_hash", name="uk_kb_documents_base_hash"),
    )
    op.create_index("idx_kb_documents_base", "kb_documents", ["tenant_id", "base_id", "created_at"])
    op.create_index("idx_kb_documents_status", "kb_documents", ["tenant_id", "status"])

    op.create_table(
        "kb_chunks",
        _id(),
        _tenant(),
        sa.Column("base_id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("section", sa.Text(), nullable=True),
        sa.Column("start_offset", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("embedding", Vector(), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=True),
        sa.Column("language", postgresql.REGCONFIG(), nullable=False),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector(language, text)", persisted=True),
            nullable=True,
        ),
        _created(),
        sa.CheckConstraint("level IN ('section', 'passage')", name=op.f("ck_kb_chunks_level")),
        sa.CheckConstraint("position >= 0 AND token_count >= 0", name=op.f("ck_kb_chunks_counts")),
        sa.CheckConstraint("start_offset >= 0 AND end_offset >= start_offset", name=op.f("ck_kb_chunks_offsets")),
        sa.CheckConstraint(
            "embedding_dim IS NULL OR embedding_dim = vector_dims(embedding)", name=op.f("ck_kb_chunks_embedding_dim")
        ),
        sa.CheckConstraint("parent_id <> id", name=op.f("ck_kb_chunks_not_own_parent")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "base_id"],
            ["kb_bases.tenant_id", "kb_bases.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_base",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "document_id"],
            ["kb_documents.tenant_id", "kb_documents.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_document",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "parent_id"],
            ["kb_chunks.tenant_id", "kb_chunks.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_parent",
        ),
        _tenant_fk("kb_chunks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_chunks")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_kb_chunks_tenant_id_id"),
        sa.UniqueConstraint("document_id", "level", "position", name="uk_kb_chunks_document_position"),
    )
    op.create_index("idx_kb_chunks_base", "kb_chunks", ["tenant_id", "base_id", "level"])
    op.create_index("idx_kb_chunks_document", "kb_chunks", ["tenant_id", "document_id", "level", "position"])
    op.create_index(
        "idx_kb_chunks_parent",
        "kb_chunks",
        ["tenant_id", "parent_id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_index("idx_kb_chunks_search", "kb_chunks", ["search_vector"], postgresql_using="gin")
    # One HNSW index per embedding size, as for memories: a query names the size, so it can use the index of it.
    for dimension in INDEXED_DIMENSIONS:
        op.execute(
            f"CREATE INDEX idx_kb_chunks_hnsw_{dimension} ON kb_chunks "
            f"USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) "
            f"WHERE embedding_dim = {dimension}"
        )
    for dimension in HALFVEC_INDEXED_DIMENSIONS:
        op.execute(
            f"CREATE INDEX idx_kb_chunks_hnsw_{dimension} ON kb_chunks "
            f"USING hnsw ((embedding::halfvec({dimension})) halfvec_cosine_ops) "
            f"WHERE embedding_dim = {dimension}"
        )


def downgrade() -> None:
    op.drop_table("kb_chunks")
    op.drop_table("kb_documents")
    op.drop_table("kb_bases")
