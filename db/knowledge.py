"""Tables of the `kb_` prefix: knowledge bases, their documents (files in the object store) and the chunks searched."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
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

KB_SCOPES = ("user", "group", "tenant")
DOCUMENT_STATUSES = ("queued", "running", "ready", "failed", "canceled")
CHUNK_LEVELS = ("section", "passage")
DEFAULT_CHUNK_TOKENS = 400
DEFAULT_CHUNK_OVERLAP = 60
MIN_CHUNK_TOKENS = 64
MAX_CHUNK_TOKENS = 2000
# Dimensions with an HNSW index of their own on kb_chunks (partial expression indexes, migration 0025), as
# memory does: vectors of any other size are still searched, exactly.
INDEXED_DIMENSIONS = (256, 384, 512, 768, 1024, 1536)
HALFVEC_INDEXED_DIMENSIONS = (3072,)


class KnowledgeBase(TenantOwned, UpdatedAt, Base):
    """A collection of documents searched together, owned by a user, a group or the whole tenant."""

    __tablename__ = "kb_bases"
    __table_args__ = (
        # One name per owner: the tenant-wide bases (both owners NULL) share one namespace too.
        UniqueConstraint(
            "tenant_id",
            "owner_user_id",
            "group_id",
            "name",
            name="uk_kb_bases_owner_name",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint(f"scope IN {KB_SCOPES}", name="scope"),
        CheckConstraint(
            "(scope = 'user' AND owner_user_id IS NOT NULL AND group_id IS NULL)"
            " OR (scope = 'group' AND group_id IS NOT NULL AND owner_user_id IS NULL)"
            " OR (scope = 'tenant' AND owner_user_id IS NULL AND group_id IS NULL)",
            name="scope_owner",
        ),
        CheckConstraint(f"chunk_tokens BETWEEN {MIN_CHUNK_TOKENS} AND {MAX_CHUNK_TOKENS}", name="chunk_tokens"),
        CheckConstraint("chunk_overlap >= 0 AND chunk_overlap * 2 <= chunk_tokens", name="chunk_overlap"),
        ForeignKeyConstraint(
            ["tenant_id", "owner_user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="CASCADE",
            name="fk_kb_bases_owner",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            ondelete="CASCADE",
            name="fk_kb_bases_group",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (created_by)",
            name="fk_kb_bases_created_by",
        ),
        Index("idx_kb_bases_owner", "tenant_id", "owner_user_id"),
        Index("idx_kb_bases_group", "tenant_id", "group_id"),
    )

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(10))
    owner_user_id: Mapped[UUID | None]
    group_id: Mapped[UUID | None]
    # A model an embeddings channel of the tenant serves; every chunk of the base is embedded with it.
    embedding_model: Mapped[str] = mapped_column(String(100))
    chunk_tokens: Mapped[int] = mapped_column(default=DEFAULT_CHUNK_TOKENS, server_default=str(DEFAULT_CHUNK_TOKENS))
    chunk_overlap: Mapped[int] = mapped_column(default=DEFAULT_CHUNK_OVERLAP, server_default=str(DEFAULT_CHUNK_OVERLAP))
    # A built-in PostgreSQL text-search configuration (checked by the service); its chunks carry it as regconfig.
    language: Mapped[str] = mapped_column(String(63), default="english", server_default="english")
    created_by: Mapped[UUID | None]


class KnowledgeDocument(TenantOwned, UpdatedAt, Base):
    """One uploaded file of a base: the file itself is in the object store, here its metadata and ingestion state."""

    __tablename__ = "kb_documents"
    __table_args__ = (
        # The same content in the same base is one document (an upload of it again returns this one).
        UniqueConstraint("tenant_id", "base_id", "content_hash", name="uk_kb_documents_base_hash"),
        CheckConstraint(f"status IN {DOCUMENT_STATUSES}", name="status"),
        CheckConstraint("size_bytes >= 0 AND chunk_count >= 0", name="counts"),
        CheckConstraint("content_hash ~ '^[0-9a-f]{64}$'", name="content_hash"),
        ForeignKeyConstraint(
            ["tenant_id", "base_id"],
            ["kb_bases.tenant_id", "kb_bases.id"],
            ondelete="CASCADE",
            name="fk_kb_documents_base",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["tenant_jobs.tenant_id", "tenant_jobs.id"],
            ondelete="SET NULL (job_id)",
            name="fk_kb_documents_job",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["auth_users.tenant_id", "auth_users.id"],
            ondelete="SET NULL (created_by)",
            name="fk_kb_documents_created_by",
        ),
        Index("idx_kb_documents_base", "tenant_id", "base_id", "created_at"),
        Index("idx_kb_documents_status", "tenant_id", "status"),
    )

    base_id: Mapped[UUID]
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    # The name in the tenant's space of the object store: kb/<base>/<document>/<filename>.
    object_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int | None]
    chunk_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # The ingestion job that last worked on it.
    job_id: Mapped[UUID | None]
    # The model its chunks were embedded with: differs from the base's while a re-index is due.
    embedding_model: Mapped[str | None] = mapped_column(String(100))
    source_url: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    created_by: Mapped[UUID | None]


class KnowledgeChunk(TenantOwned, Base):
    """A piece of a document's text, searched by vector and by words; a passage points at its section."""

    __tablename__ = "kb_chunks"
    __table_args__ = (
        # A retried ingestion writes the same (document, level, position) again: an upsert, never a duplicate.
        UniqueConstraint("tenant_id", "document_id", "level", "position", name="uk_kb_chunks_document_position"),
        CheckConstraint(f"level IN {CHUNK_LEVELS}", name="level"),
        CheckConstraint("position >= 0 AND token_count >= 0", name="counts"),
        CheckConstraint("start_offset >= 0 AND end_offset >= start_offset", name="offsets"),
        CheckConstraint("embedding_dim IS NULL OR embedding_dim = vector_dims(embedding)", name="embedding_dim"),
        CheckConstraint("parent_id <> id", name="not_own_parent"),
        ForeignKeyConstraint(
            ["tenant_id", "base_id"],
            ["kb_bases.tenant_id", "kb_bases.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_base",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "document_id"],
            ["kb_documents.tenant_id", "kb_documents.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_document",
        ),
        ForeignKeyConstraint(
            ["tenant_id", "parent_id"],
            ["kb_chunks.tenant_id", "kb_chunks.id"],
            ondelete="CASCADE",
            name="fk_kb_chunks_parent",
        ),
        Index("idx_kb_chunks_base", "tenant_id", "base_id", "level"),
        Index("idx_kb_chunks_document", "tenant_id", "document_id", "level", "position"),
        Index("idx_kb_chunks_parent", "tenant_id", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
        Index("idx_kb_chunks_search", "search_vector", postgresql_using="gin"),
    )

    base_id: Mapped[UUID]
    document_id: Mapped[UUID]
    parent_id: Mapped[UUID | None]
    level: Mapped[str] = mapped_column(String(10))
    position: Mapped[int]
    page: Mapped[int | None]
    # The heading path the chunk sits under ("Install > Linux"), where the document has headings.
    section: Mapped[str | None] = mapped_column(Text)
    # Character offsets in the document's normalised text.
    start_offset: Mapped[int]
    end_offset: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    # Deferred: a vector is kilobytes to fetch and parse, and only SQL ever reads it.
    embedding: Mapped[Any] = mapped_column(Vector(), nullable=True, deferred=True)
    embedding_dim: Mapped[int | None]
    embedding_model: Mapped[str | None] = mapped_column(String(100))
    # The base's language when the chunk was written (a base's language change rewrites it).
    language: Mapped[str] = mapped_column(REGCONFIG, deferred=True)
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector(language, text)", persisted=True), deferred=True
    )
