"""Request and response bodies of the memory API, and the JSON the memory model must answer with."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from app.schemas import Input

MemoryType = Literal["fact", "preference", "episodic"]
# The text-search configuration (stemming, stop words) memories are matched by words in, by default.
DEFAULT_LANGUAGE = "english"
MemoryText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Importance = Annotated[int, msgspec.Meta(ge=1, le=100)]


MEMORY_ARCHIVE_FORMAT: Literal["lyss.memories.v1"] = "lyss.memories.v1"


class ArchivedMemory(Input):
    text: MemoryText
    memory_type: MemoryType = "fact"
    importance: Importance = 50
    category: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    metadata: dict[str, Any] = {}
    created_at: datetime.datetime | None = None


class MemoryArchive(Input):
    """A user's active memories as `memory.export` writes them and `POST /api/memories/imports` reads them."""

    format: Literal["lyss.memories.v1"]
    memories: Annotated[list[ArchivedMemory], msgspec.Meta(max_length=10000)]
    exported_at: datetime.datetime | None = None


class MemoryExportPayload(Input):
    # Admins may export any user's memories; everyone else exports their own.
    user_id: UUID | None = None


class MemoryImportPayload(Input):
    user_id: UUID
    object_name: str


class ChatTurn(Input):
    role: Literal["user", "assistant"]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]


class MemoryAdd(Input):
    """Either `messages` (facts are extracted by the memory model) or `text` (stored as is with infer=false)."""

    messages: Annotated[list[ChatTurn], msgspec.Meta(max_length=100)] | None = None
    text: MemoryText | None = None
    infer: bool = True
    memory_type: MemoryType = "fact"
    importance: Importance = 50
    metadata: dict[str, Any] = {}
    # Admins: whose memory (another user of the organization); others: their own, the default.
    user_id: UUID | None = None


class MemoryUpdate(Input):
    text: MemoryText


class MemoryFilters(Input):
    memory_type: MemoryType | None = None
    category: str | None = None
    # Every key/value here must be in the memory's metadata (JSON containment).
    metadata: dict[str, Any] | None = None


class MemorySearch(Input):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    filters: MemoryFilters | None = None
    # Admins may search one user's memories; everyone else searches their own.
    user_id: UUID | None = None


class MemoryRead(msgspec.Struct):
    id: UUID
    user_id: UUID
    text: str
    memory_type: str
    category: str | None
    importance: int
    metadata: dict[str, Any]
    status: str
    invalidated_at: datetime.datetime | None
    invalidation_reason: str | None
    source_type: str
    source_id: UUID | None
    embedding_model: str | None
    embedding_dim: int | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class MemoryHit(msgspec.Struct):
    memory: MemoryRead
    # Cosine similarity to the query, higher is better (1 = same direction); None without a vector.
    score: float | None
    # The rarity-weighted share of the query's words the memory has, 0 to 1.
    lexical_score: float
    # What the results are ordered by: the similarity (0 without one) plus a bounded lift for shared words.
    fused_score: float


class HistoryRead(msgspec.Struct):
    id: UUID
    memory_id: UUID
    event: str
    old_text: str | None
    new_text: str | None
    reason: str | None
    actor: str
    actor_user_id: UUID | None
    job_id: UUID | None
    source_message_id: UUID | None
    created_at: datetime.datetime


class MemorySettings(Input):
    """Per tenant (admins): which models extract and embed memories."""

    enabled: bool = True
    llm_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    embedding_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    # Memories at least this similar are linked as associations.
    association_threshold: Annotated[float, msgspec.Meta(ge=0.5, le=1.0)] = 0.85
    # How many memories chat puts into each turn's context.
    chat_memories: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    # The text-search configuration memories are matched by words in (PostgreSQL's: stemming, stop words).
    language: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern="^[a-z_]+$")] = DEFAULT_LANGUAGE


# --- what the memory model answers ---------------------------------------------------------------


class ExtractedFact(msgspec.Struct):
    text: MemoryText
    type: MemoryType = "fact"
    importance: Importance = 50


class Extraction(msgspec.Struct):
    facts: list[ExtractedFact]


class Decision(msgspec.Struct):
    id: str
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    text: str = ""
    reason: str | None = None


class Decisions(msgspec.Struct):
    memory: list[Decision]
