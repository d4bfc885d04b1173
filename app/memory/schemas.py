"""Request and response bodies of the memory API, and the JSON the memory model must answer with."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from app.schemas import Input

MemoryType = Literal["fact", "preference", "episodic"]
# The text-search configuration (stemming, stop words) memories are matched by words in, by default.
DEFAULT_LANGUAGE = "english"
MemoryText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Importance = Annotated[int, msgspec.Meta(ge=1, le=100)]
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
# An agent's or a run's name, as the caller's own system calls it.
ScopeId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")]
# A metadata key a filter may name: a plain identifier (it is written into a JSON path).
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
METADATA_OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
MAX_FILTER_CONDITIONS = 20
MAX_FILTER_VALUES = 100


MEMORY_ARCHIVE_FORMAT: Literal["lyss.memories.v1"] = "lyss.memories.v1"


class ArchivedMemory(Input):
    text: MemoryText
    memory_type: MemoryType = "fact"
    importance: Importance = 50
    category: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    metadata: dict[str, Any] = {}
    created_at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None


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
    category: Category | None = None
    metadata: dict[str, Any] = {}
    # Past this instant the memory is forgotten (must be in the future).
    expires_at: datetime.datetime | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    # Admins: whose memory (another user of the organization); others: their own, the default.
    user_id: UUID | None = None


class BatchItem(Input):
    text: MemoryText
    memory_type: MemoryType = "fact"
    importance: Importance = 50
    category: Category | None = None
    metadata: dict[str, Any] = {}
    expires_at: datetime.datetime | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None


MAX_BATCH = 1000


class MemoryBatch(Input):
    """Memories stored as written, all or none."""

    memories: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    user_id: UUID | None = None


class MemoryCorrection(Input):
    """The portal's correction form: a new text only."""

    text: MemoryText


class MemoryUpdate(Input):
    """Any of: a new text (the old one stays in the history), a category, an expiry (null: never)."""

    text: MemoryText | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType | None = msgspec.UNSET
    expires_at: datetime.datetime | msgspec.UnsetType | None = msgspec.UNSET


def _check_metadata_filter(conditions: dict[str, Any]) -> None:
    """The grammar of `MemoryFilters.metadata` (see docs/api.md); a ValueError names what is wrong."""
    count = 0
    for key, condition in conditions.items():
        if not METADATA_KEY.match(key):
            raise ValueError(f"metadata filter key '{key[:64]}' is not a plain identifier (letters, digits, _)")
        if not isinstance(condition, dict):
            count += 1
            continue
        if not condition:
            raise ValueError(f"metadata filter on '{key}' has no operator")
        for operator, value in condition.items():
            count += 1
            if operator not in METADATA_OPERATORS:
                raise ValueError(
                    f"metadata filter on '{key}': unknown operator '{operator[:20]}'; "
                    f"expected one of {', '.join(METADATA_OPERATORS)}"
                )
            if operator in ("in", "nin") and (
                not isinstance(value, list) or not value or len(value) > MAX_FILTER_VALUES
            ):
                raise ValueError(
                    f"metadata filter on '{key}': '{operator}' takes a list of 1 to {MAX_FILTER_VALUES} values"
                )
            if operator in RANGE_OPERATORS and range_bound(value) is None:
                raise ValueError(f"metadata filter on '{key}': '{operator}' takes a number or an ISO date or date-time")
    if count > MAX_FILTER_CONDITIONS:
        raise ValueError(f"metadata filter has {count} conditions; at most {MAX_FILTER_CONDITIONS}")


def range_bound(value: Any) -> float | int | datetime.datetime | None:
    """A range operator's bound: a number, or an ISO date / date-time (a date is its midnight, UTC; a time
    without an offset is UTC); anything else is not a bound."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    return None


class MemoryFilters(Input):
    memory_type: MemoryType | None = None
    category: Category | None = None
    # Any of these categories.
    categories: Annotated[list[Category], msgspec.Meta(min_length=1, max_length=MAX_FILTER_VALUES)] | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    # key -> a value (the memory's metadata contains it, as JSON containment) or an operator object
    # {"eq" | "ne" | "in" | "nin" | "gt" | "gte" | "lt" | "lte": value, ...}; every condition must hold.
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.metadata:
            _check_metadata_filter(self.metadata)


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
    superseded_by: UUID | None
    expires_at: datetime.datetime | None
    agent_id: str | None
    run_id: str | None
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
    # What the search ordered by: the similarity (0 without one) plus a bounded lift for shared words.
    fused_score: float
    # The rerank model's relevance when the organization reranks (the results are then in its order);
    # None when the search was not reranked.
    rerank_score: float | None = None


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
    superseded_by: UUID | None
    created_at: datetime.datetime


class MemorySettings(Input):
    """Per tenant (admins): which models extract, embed and rerank memories."""

    enabled: bool = True
    llm_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    embedding_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    # Memories at least this similar are linked as associations.
    association_threshold: Annotated[float, msgspec.Meta(ge=0.5, le=1.0)] = 0.85
    # How many memories chat puts into each turn's context.
    chat_memories: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    # The text-search configuration memories are matched by words in (PostgreSQL's: stemming, stop words).
    language: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern="^[a-z_]+$")] = DEFAULT_LANGUAGE
    # A model behind `/v1/rerank` that reorders the search's best `rerank_candidates`; None: no reranking.
    rerank_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    rerank_candidates: Annotated[int, msgspec.Meta(ge=2, le=100)] = 20


# --- what the memory model answers ---------------------------------------------------------------


class ExtractedFact(msgspec.Struct):
    text: MemoryText
    type: MemoryType = "fact"
    importance: Importance = 50
    category: Category | None = None


class Extraction(msgspec.Struct):
    facts: list[ExtractedFact]


class Decision(msgspec.Struct):
    id: str
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    text: str = ""
    reason: str | None = None


class Decisions(msgspec.Struct):
    memory: list[Decision]
