"""/v1/rerank in the shape Cohere (v2) and Jina share: the request Lyss reads, and the answer it gives back.

Cohere's `v2/rerank` and Jina's `v1/rerank` take the same request (`model`, `query`, `documents`, `top_n`)
and answer `results: [{index, relevance_score}]`; they differ in how they report what they bill (Cohere
`meta.billed_units.search_units`, Jina `usage.total_tokens`) and whether documents come back (Jina by
default, Cohere v2 never). Lyss answers the union of both, so that either client reads it, and attaches
the documents itself when asked (`return_documents`, false by default as at Cohere).
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any

import msgspec

from app.gateway import errors
from app.gateway.adapters.base import UpstreamError, reported_count
from app.gateway.dialects.openai import NonEmpty, TokenLimit, invalid_parameter

# Cohere bills one search unit per query of up to this many documents.
DOCUMENTS_PER_SEARCH_UNIT = 100
# Cohere counts a document longer than this many tokens (query included) as one more document per chunk.
TOKENS_PER_DOCUMENT_CHUNK = 500
# Fields Lyss sends on in its own form (documents as plain strings) or answers itself (return_documents).
_REWRITTEN = ("model", "documents", "return_documents")


class _Document(msgspec.Struct):
    text: str


class RerankRequest(msgspec.Struct):
    model: NonEmpty
    query: NonEmpty
    documents: Annotated[list[str | _Document], msgspec.Meta(min_length=1)]
    top_n: TokenLimit | None = None
    return_documents: bool = False
    max_tokens_per_doc: TokenLimit | None = None

    @property
    def texts(self) -> list[str]:
        return [document if isinstance(document, str) else document.text for document in self.documents]

    def search_units_bound(self, raw_size: int) -> int:
        """The most search units the call can be billed: every chunk a long document could be cut into (a
        token is at least one byte of the request) counted as a document."""
        chunks = len(self.documents) + raw_size // TOKENS_PER_DOCUMENT_CHUNK
        return -(-chunks // DOCUMENTS_PER_SEARCH_UNIT)

    @property
    def search_units(self) -> int:
        """Search units as Cohere counts them for documents of ordinary length."""
        return -(-len(self.documents) // DOCUMENTS_PER_SEARCH_UNIT)

    def prompt_bound(self, raw_size: int) -> int:
        """The most tokens a token-priced reranker can bill: it reads the query beside every document."""
        return raw_size + len(self.query.encode()) * len(self.documents)


def rerank_request(body: dict[str, Any], max_documents: int) -> RerankRequest:
    try:
        request = msgspec.convert(body, RerankRequest, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None
    if not request.query.strip():
        raise errors.invalid_request(
            "Invalid value for 'query': give the text to rank the documents by.", param="query"
        )
    if len(request.documents) > max_documents:
        raise errors.invalid_request(
            f"Invalid value for 'documents': at most {max_documents} documents a call "
            f"({len(request.documents)} given).",
            param="documents",
        )
    return request


def upstream_body(body: dict[str, Any], request: RerankRequest, upstream_model: str) -> dict[str, Any]:
    """What the provider is sent: the client's fields, with the channel's model name and plain-text documents
    (the form both Cohere v2 and Jina take)."""
    sent = {name: value for name, value in body.items() if name not in _REWRITTEN}
    return {**sent, "model": upstream_model, "documents": request.texts}


class _Result(msgspec.Struct):
    index: int
    relevance_score: float


class _BilledUnits(msgspec.Struct):
    search_units: Any = None


class _Meta(msgspec.Struct):
    billed_units: _BilledUnits | None = None


class _Usage(msgspec.Struct):
    total_tokens: Any = None
    prompt_tokens: Any = None


class _Answer(msgspec.Struct):
    results: list[_Result]
    id: Any = None
    meta: _Meta | None = None
    usage: _Usage | None = None


class Ranked(msgspec.Struct, frozen=True):
    """A provider's ranking, checked: the answer to send, and what it reported billing (None: not said)."""

    body: dict[str, Any]
    tokens: int | None
    search_units: int | None


def ranked(answer: dict[str, Any], request: RerankRequest, model: str) -> Ranked:
    """The provider's answer in Lyss's shape, or UpstreamError (a 502 to try the next channel with) when it
    is not a ranking of these documents: a missing or out-of-range index, one given twice, a score that is
    not a finite number."""
    try:
        parsed = msgspec.convert(answer, _Answer)
    except msgspec.ValidationError as error:
        raise UpstreamError(f"the provider's rerank answer is malformed: {error}", status=502) from None
    texts = request.texts
    seen: set[int] = set()
    for result in parsed.results:
        if not 0 <= result.index < len(texts) or result.index in seen or not math.isfinite(result.relevance_score):
            raise UpstreamError("the provider's rerank answer has an unknown, repeated or unscored result", status=502)
        seen.add(result.index)
    results = sorted(parsed.results, key=lambda result: (-result.relevance_score, result.index))
    if request.top_n is not None:
        results = results[: request.top_n]
    usage = parsed.usage
    tokens = None
    if usage is not None:
        tokens = reported_count(usage.total_tokens if usage.total_tokens is not None else usage.prompt_tokens)
    billed = parsed.meta.billed_units if parsed.meta is not None else None
    units = reported_count(billed.search_units) if billed is not None and billed.search_units is not None else None
    return Ranked(
        body={
            "id": parsed.id if isinstance(parsed.id, str) and parsed.id else f"rerank-{uuid.uuid4().hex}",
            "model": model,
            "results": [
                {"index": result.index, "relevance_score": result.relevance_score}
                | ({"document": {"text": texts[result.index]}} if request.return_documents else {})
                for result in results
            ],
        },
        tokens=tokens,
        search_units=units,
    )
