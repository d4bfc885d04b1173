"""Lyss's own calls through the gateway (chat, memory, rerank): made on the user's built-in chat key, so they are
routed, rate-limited, charged against quota and logged exactly like a call to /v1."""

from __future__ import annotations

import array
import ipaddress
import math
import secrets
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ServiceError
from app.gateway.admin import TOKEN_PREFIX, api_key_hash
from app.gateway.caches import TokenInfo
from app.gateway.engine import Answer, Gateway, StreamAnswer
from app.gateway.errors import GatewayError
from db.provider import ApiToken
from db.tenant import Organization

CHAT_TOKEN_NAME = "Chat (built in)"  # noqa: S105 - a key's display name
# pgvector's limit for a stored vector.
MAX_EMBEDDING_DIMENSIONS = 16000


class GatewayRefused(ServiceError):
    """The gateway said no (quota, rate, model, provider): the same status and message as /v1 would give."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message, headers=error.headers)
        self.status_code = error.status_code
        self.code = error.code


class EmbeddingRejected(ServiceError):
    """The embedding model answered something that cannot be stored: wrong count, size or values."""

    status_code = 502


class RerankRejected(ServiceError):
    """The reranker answered something that is not a ranking of the documents it was given."""

    status_code = 502


async def chat_token(session: AsyncSession, user_id: UUID) -> TokenInfo:
    """The user's built-in chat key, created on first use without a budget of its own (the tenant's applies).

    Nobody ever holds this key: only its (random) hash exists. Admins set its budget, rate and models in
    the key API like any other key, which is how they limit chat and memory per user.
    """
    token = await session.scalar(select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.name == CHAT_TOKEN_NAME))
    organization = await session.scalar(select(Organization))
    if organization is None:
        raise ServiceError("Your organization is not available.")
    if token is None:
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await session.execute(
            pg_insert(ApiToken)
            .values(
                tenant_id=organization.id,
                user_id=user_id,
                name=CHAT_TOKEN_NAME,
                key_hash=api_key_hash(key),
                key_prefix="sk-lyss-chat",
            )
            .on_conflict_do_nothing(constraint="uk_provider_tokens_user_name")
        )
        token = await session.scalar(
            select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.name == CHAT_TOKEN_NAME)
        )
        assert token is not None
    return TokenInfo(
        id=token.id,
        tenant_id=token.tenant_id,
        user_id=token.user_id,
        usable=token.status == "active",
        tenant_active=organization.status == "active",
        expires_at=token.expires_at,
        quota=token.quota,
        rpm_limit=token.rpm_limit,
        tpm_limit=token.tpm_limit,
        allowed_models=frozenset(token.allowed_models),
        allowed_channels=frozenset(UUID(value) for value in token.allowed_channels),
        allowed_networks=tuple(ipaddress.ip_network(value, strict=False) for value in token.allowed_ips),
        tenant_quota=organization.quota,
        max_concurrent=token.max_concurrent,
        max_streams=token.max_streams,
    )


def _check_usable(token: TokenInfo) -> None:
    if not token.usable or not token.tenant_active:
        raise ServiceError("Chat is disabled for your account; ask an administrator.")


async def complete(
    gateway: Gateway, token: TokenInfo, body: dict[str, Any], request_id: str | None = None
) -> dict[str, Any]:
    """A non-streamed chat completion; the OpenAI response body."""
    _check_usable(token)
    encoded = msgspec.json.encode(body)
    try:
        answer = await gateway.chat(
            token, {**body, "stream": False}, raw_size=len(encoded), dialect="openai", request_id=request_id
        )
    except GatewayError as error:
        raise GatewayRefused(error) from None
    assert isinstance(answer, Answer)
    decoded: dict[str, Any] = msgspec.json.decode(answer.body)
    return decoded


async def stream(
    gateway: Gateway, token: TokenInfo, body: dict[str, Any], request_id: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """A streamed chat completion, chunk by chunk (OpenAI chunk objects; the last one carries usage).

    The gateway opens the upstream stream before this returns, so a refusal is raised here, not mid-stream.
    """
    _check_usable(token)
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        answer = await gateway.chat(
            token, body, raw_size=len(msgspec.json.encode(body)), dialect="openai", request_id=request_id
        )
    except GatewayError as error:
        raise GatewayRefused(error) from None
    assert isinstance(answer, StreamAnswer)
    return _chunks(answer.chunks)


async def _chunks(events: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk: dict[str, Any] = msgspec.json.decode(line[len(b"data: ") :])
            yield chunk


def cached_query_vector(gateway: Gateway, tenant_id: UUID, payer: UUID, model: str, text: str) -> list[float] | None:
    """A vector `payer` paid for this text and model in the last minute, if the cache has it.

    Searches repeat (a page re-rendered, the same question asked again): the cache skips the provider, the
    reservation and the usage record for those. Keyed by who paid, not only the tenant, so a vector only ever
    serves the one who paid for it: memory names the user (whose one chat key pays), knowledge search the
    paying key's id (a user's API key and chat key have limits of their own).
    """
    cached = gateway.query_vectors.get((tenant_id, payer, model, text))
    return None if cached is None else cached.tolist()


def cache_query_vector(
    gateway: Gateway, tenant_id: UUID, payer: UUID, model: str, text: str, vector: list[float]
) -> None:
    # float32 as pgvector stores them: a quarter of the memory of a list of Python floats.
    gateway.query_vectors[(tenant_id, payer, model, text)] = array.array("f", vector)


async def embed(
    gateway: Gateway, token: TokenInfo, model: str, texts: list[str], request_id: str | None = None
) -> list[list[float]]:
    """One vector per text, all of one size, every value a finite number."""
    _check_usable(token)
    body = {"model": model, "input": texts}
    try:
        answer = await gateway.embeddings(token, body, raw_size=len(msgspec.json.encode(body)), request_id=request_id)
    except GatewayError as error:
        raise GatewayRefused(error) from None
    try:
        data = sorted(msgspec.json.decode(answer.body)["data"], key=lambda item: item["index"])
        vectors = [[float(value) for value in item["embedding"]] for item in data]
    except (KeyError, TypeError, ValueError, msgspec.DecodeError):
        raise EmbeddingRejected(f"The embedding model '{model}' answered in an unexpected format.") from None
    if len(vectors) != len(texts):
        raise EmbeddingRejected(
            f"The embedding model '{model}' returned {len(vectors)} vectors for {len(texts)} texts."
        )
    sizes = {len(vector) for vector in vectors}
    if len(sizes) != 1 or not 0 < next(iter(sizes)) <= MAX_EMBEDDING_DIMENSIONS:
        raise EmbeddingRejected(f"The embedding model '{model}' returned vectors of sizes {sorted(sizes)}.")
    if not all(math.isfinite(value) for vector in vectors for value in vector):
        raise EmbeddingRejected(f"The embedding model '{model}' returned a vector with a non-finite value.")
    return vectors


async def rerank(
    gateway: Gateway,
    token: TokenInfo,
    model: str,
    query: str,
    documents: list[str],
    top_n: int | None = None,
    request_id: str | None = None,
) -> list[tuple[int, float]]:
    """(document index, relevance score) of the most relevant documents, best first (`top_n` of them, else all).

    The gateway has checked the provider's ranking (indices in range, none twice, finite scores) and
    normalised its shape; `RerankRejected` is for an answer that does not even decode."""
    _check_usable(token)
    body: dict[str, Any] = {"model": model, "query": query, "documents": documents}
    if top_n is not None:
        body["top_n"] = top_n
    try:
        answer = await gateway.rerank(token, body, raw_size=len(msgspec.json.encode(body)), request_id=request_id)
    except GatewayError as error:
        raise GatewayRefused(error) from None
    try:
        ranking = [
            (int(item["index"]), float(item["relevance_score"])) for item in msgspec.json.decode(answer.body)["results"]
        ]
    except (KeyError, TypeError, ValueError, msgspec.DecodeError):
        raise RerankRejected(f"The rerank model '{model}' answered in an unexpected format.") from None
    return ranking
