"""Knowledge put into a model's context: passages retrieved for a question, their sections numbered as sources."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ServiceError
from app.gateway.client import chat_token
from app.gateway.engine import Gateway
from app.knowledge import search
from app.knowledge.chunking import count_tokens
from app.knowledge.schemas import BaseSearch, SearchHit
from app.knowledge.services import Caller
from app.observability.logging import get_logger

# How many passages a turn retrieves; the token budget decides how many of them go in.
RETRIEVED_PASSAGES = 8
# A question longer than search takes is searched by its beginning.
MAX_QUERY_CHARACTERS = 2000
INSTRUCTIONS = (
    "Sources from the user's knowledge bases follow, numbered. Answer from them when they are relevant and cite "
    "each source you use by its number in square brackets, e.g. [1]; when they do not hold the answer, say so."
)
logger = get_logger("lyss.knowledge")


class Citation(msgspec.Struct):
    """A numbered source put into the context: where its passage is."""

    number: int
    base_id: UUID
    document_id: UUID
    filename: str
    page: int | None
    section: str | None
    chunk_id: UUID


class Knowledge(msgspec.Struct):
    """What a turn got from its bases: the system text (empty without sources), its sources, or why none."""

    text: str = ""
    citations: list[Citation] = []
    # Set when retrieval failed (the gateway refused the query's embedding, bases of mixed models...): the turn
    # goes on without knowledge.
    error: str | None = None


def sources(hits: list[SearchHit], budget_tokens: int) -> Knowledge:
    """The hits as numbered sources within `budget_tokens`, best first.

    Each source is the passage's parent section (the passage alone when it has none); passages of one section
    make one source. The budget is spent greedily in rank order: a section that does not fit in what is left
    gives way to its passage alone, and a passage that does not fit either is left out (a later, smaller one
    may still go in), so the best-ranked passages are never crowded out by the context of worse ones.
    """
    blocks = [INSTRUCTIONS]
    citations: list[Citation] = []
    seen_sections: set[UUID] = set()
    for hit in hits:
        if hit.parent is not None and hit.parent.chunk_id in seen_sections:
            continue
        number = len(citations) + 1
        where = ", ".join(
            part for part in (hit.filename, f"page {hit.page}" if hit.page is not None else None, hit.section) if part
        )
        block = None
        for text in (hit.parent.text if hit.parent is not None else None, hit.text):
            if text is None:
                continue
            candidate = f"[{number}] {where}\n{text}"
            if count_tokens("\n\n".join([*blocks, candidate])) <= budget_tokens:
                block = candidate
                break
        if block is None:
            continue
        blocks.append(block)
        if hit.parent is not None:
            seen_sections.add(hit.parent.chunk_id)
        citations.append(
            Citation(
                number=number,
                base_id=hit.base_id,
                document_id=hit.document_id,
                filename=hit.filename,
                page=hit.page,
                section=hit.section,
                chunk_id=hit.chunk_id,
            )
        )
    if not citations:
        return Knowledge()
    return Knowledge(text="\n\n".join(blocks), citations=citations)


async def retrieve(
    session: AsyncSession,
    gateway: Gateway,
    *,
    tenant_id: UUID,
    caller: Caller,
    base_ids: Sequence[UUID],
    question: str,
    budget_tokens: int,
) -> Knowledge:
    """Search `base_ids` (hybrid) for the question and number the best sections within the budget.

    The query's embedding is billed to the caller's chat key, as any knowledge search is. A failure of the
    search is returned as `error`, not raised: knowledge makes answers better, and its absence is said, but it
    does not stop them.
    """
    if not base_ids or not question.strip():
        return Knowledge()
    try:
        hits = await search.search(
            session,
            gateway,
            tenant_id=tenant_id,
            caller=caller,
            base_ids=base_ids,
            request=BaseSearch(query=question.strip()[:MAX_QUERY_CHARACTERS], limit=RETRIEVED_PASSAGES),
            payer=await chat_token(session, caller.user_id),
        )
    except ServiceError as error:
        logger.warning("knowledge left out of an answer", error=error.detail)
        return Knowledge(error=error.detail)
    return sources(hits, budget_tokens)
