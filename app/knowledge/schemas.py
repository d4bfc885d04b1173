"""Request and response bodies of the knowledge bases API."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from app.schemas import Input
from db.knowledge import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, MAX_CHUNK_TOKENS, MIN_CHUNK_TOKENS

Scope = Literal["user", "group", "tenant"]
BaseName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
ChunkTokens = Annotated[int, msgspec.Meta(ge=MIN_CHUNK_TOKENS, le=MAX_CHUNK_TOKENS)]
ChunkOverlap = Annotated[int, msgspec.Meta(ge=0, lt=MAX_CHUNK_TOKENS)]
# A PostgreSQL text-search configuration's name; the service checks it is one the server has.
Language = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern="^[a-z_]+$")]


class KnowledgeBaseCreate(Input):
    """A new base: a user's own (the default), a group's, or the whole tenant's."""

    name: BaseName
    embedding_model: ModelName
    description: Description | None = None
    scope: Scope = "user"
    # scope=user: the owner, the caller by default (an admin may name another user).
    owner_user_id: UUID | None = None
    # scope=group: the group (its managers and tenant admins may create one).
    group_id: UUID | None = None
    chunk_tokens: ChunkTokens = DEFAULT_CHUNK_TOKENS
    chunk_overlap: ChunkOverlap = DEFAULT_CHUNK_OVERLAP
    language: Language = "english"


class KnowledgeBaseUpdate(Input):
    """Any of the base's settings; its scope and owner stay."""

    name: BaseName | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    embedding_model: ModelName | msgspec.UnsetType = msgspec.UNSET
    chunk_tokens: ChunkTokens | msgspec.UnsetType = msgspec.UNSET
    chunk_overlap: ChunkOverlap | msgspec.UnsetType = msgspec.UNSET
    language: Language | msgspec.UnsetType = msgspec.UNSET


class DocumentFromUrl(Input):
    """A document to fetch from a URL on a host the organization allows; `metadata` as an upload's."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    metadata: dict[str, Any] = {}


class KnowledgeBaseRead(msgspec.Struct):
    id: UUID
    name: str
    description: str | None
    scope: Scope
    owner_user_id: UUID | None
    group_id: UUID | None
    embedding_model: str
    chunk_tokens: int
    chunk_overlap: int
    language: str
    created_by: UUID | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    # Whether the caller may change the base and its documents (reading it is why they see it).
    writable: bool


class DocumentRead(msgspec.Struct):
    id: UUID
    base_id: UUID
    filename: str
    content_type: str
    size_bytes: int
    content_hash: str
    status: Literal["queued", "running", "ready", "failed", "canceled"]
    # Why the ingestion failed or stopped, for people.
    error: str | None
    pages: int | None
    chunk_count: int
    job_id: UUID | None
    embedding_model: str | None
    source_url: str | None
    metadata: dict[str, Any]
    created_by: UUID | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class DocumentUploaded(DocumentRead):
    # True: the base already had this content; this is that document and nothing new was stored.
    duplicate: bool = False


class ChunkRead(msgspec.Struct):
    """A passage of a document as a preview shows it: where it sits and its text."""

    id: UUID
    position: int
    page: int | None
    section: str | None
    start_offset: int
    end_offset: int
    token_count: int
    text: str


# --- search ---------------------------------------------------------------------------------------

MAX_SEARCH_BASES = 20
MAX_FILTER_VALUES = 100
SearchMode = Literal["hybrid", "vector", "text"]
ContentType = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
MetadataKey = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class SearchFilters(Input):
    """Which documents' passages are searched; every condition given must hold."""

    document_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=MAX_FILTER_VALUES)] | None = None
    content_types: Annotated[list[ContentType], msgspec.Meta(min_length=1, max_length=MAX_FILTER_VALUES)] | None = None
    # key -> value: the document's metadata has exactly this value under this key (JSON equality).
    metadata: Annotated[dict[MetadataKey, Any], msgspec.Meta(min_length=1, max_length=20)] | None = None
    # The document's upload time.
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None


class BaseSearch(Input, kw_only=True):
    """A search of one base (the base in the path)."""

    query: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 8
    filters: SearchFilters | None = None
    # hybrid: by meaning and by words, fused; vector or text: one of them alone.
    mode: SearchMode = "hybrid"
    # Put the best candidates in a rerank model's order (`rerank_model`, else the organization's memory one).
    rerank: bool = False
    rerank_model: ModelName | None = None
    # Leave out passages that say nearly what a better one already says (maximal marginal relevance).
    diversity: bool = False


class KnowledgeSearch(BaseSearch, kw_only=True):
    """A search of several bases at once: they must share one embedding model and vector size."""

    base_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=MAX_SEARCH_BASES)]


class ParentSection(msgspec.Struct):
    chunk_id: UUID
    text: str


class SearchHit(msgspec.Struct):
    chunk_id: UUID
    document_id: UUID
    filename: str
    base_id: UUID
    page: int | None
    section: str | None
    text: str
    start_offset: int
    end_offset: int
    # What the results are ordered by, higher is better: the fused rank score (hybrid), the cosine similarity
    # (vector), the text rank (text), or the rerank model's relevance when reranked.
    score: float
    # The section the passage lies in: the context to give a model around it.
    parent: ParentSection | None
