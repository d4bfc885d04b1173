"""Knowledge for `/v1/chat/completions`: the `knowledge` extension field read, its sources put into the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.services import ADMIN_ROLES
from app.errors import NotFound, ServiceError
from app.gateway import errors
from app.gateway.caches import TokenInfo
from app.gateway.dialects.openai import KnowledgeField
from app.gateway.engine import Gateway
from app.gateway.errors import GatewayError
from app.knowledge import search
from app.knowledge.context import MAX_QUERY_CHARACTERS, RETRIEVED_PASSAGES, Citation, sources
from app.knowledge.schemas import BaseSearch
from app.knowledge.services import Caller, readable_bases
from db.auth import User
from db.session import tenant_session

FIELD = "knowledge"
CITATIONS_FIELD = "lyss_citations"
CITATIONS_HEADER = "x-lyss-citations"
_DONE = b"data: [DONE]\n\n"


class Injected(msgspec.Struct):
    """The request to send (the field gone, the sources in its system message), the bytes the sources added to
    the prompt, and what each number cites."""

    body: dict[str, Any]
    added_bytes: int
    citations: list[Citation]


def _knowledge_request(value: Any) -> KnowledgeField:
    try:
        return msgspec.convert(value, KnowledgeField)
    except msgspec.ValidationError as error:
        # "... - at `$.base_ids[0]`" names the field within `knowledge`.
        path = str(error).rsplit("at `$", 1)
        param = f"{FIELD}{path[1].rstrip('`').split('[')[0]}" if len(path) == 2 else FIELD
        raise errors.invalid_request(f"`{FIELD}`: {error}", param=param) from None


def _question(body: dict[str, Any]) -> str:
    """The text of the last user message (its text parts, for a message of parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise errors.invalid_request("`messages` must be a list of messages.", param="messages")
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = " ".join(
                str(part.get("text") or "") for part in content if isinstance(part, dict) and part.get("type") == "text"
            )
        else:
            text = ""
        if text.strip():
            return text.strip()[:MAX_QUERY_CHARACTERS]
    raise errors.invalid_request(
        f"`{FIELD}` searches with the last user message's text; this request has none.", param="messages"
    )


def _refusal(error: ServiceError) -> GatewayError:
    return GatewayError(
        error.status_code,
        error.detail,
        error_type="invalid_request_error" if error.status_code < 500 else "api_error",
        code=getattr(error, "code", None),
        param=f"{FIELD}.base_ids" if error.field == "base_ids" else None,
        headers=error.headers,
    )


async def _caller(session: AsyncSession, token: TokenInfo) -> Caller:
    user = await session.get(User, token.user_id)
    return Caller(user_id=token.user_id, is_admin=user is not None and user.role in ADMIN_ROLES)


async def inject(
    gateway: Gateway, session_maker: async_sessionmaker[AsyncSession], token: TokenInfo, body: dict[str, Any]
) -> Injected:
    """Search the named bases (hybrid) with the last user message and put the best sections into the request.

    The key's user must be able to read each base (a 404 naming `knowledge.base_ids`). The query's embedding
    is paid by the key that made the call, within its own budget, rate and models (the user's chat key is not
    touched): a refusal there is this call's. The client asked for knowledge: a failed
    search is its error (status and message kept), not an answer without it.
    """
    wanted = _knowledge_request(body[FIELD])
    question = _question(body)
    async with tenant_session(session_maker, token.tenant_id) as session:
        caller = await _caller(session, token)
        try:
            await readable_bases(session, list(dict.fromkeys(wanted.base_ids)), caller)
        except NotFound as error:
            raise GatewayError(
                404,
                error.detail.replace("`base_ids`", f"`{FIELD}.base_ids`"),
                error_type="invalid_request_error",
                code="knowledge_base_not_found",
                param=f"{FIELD}.base_ids",
            ) from None
        try:
            hits = await search.search(
                session,
                gateway,
                tenant_id=token.tenant_id,
                caller=caller,
                base_ids=wanted.base_ids,
                request=BaseSearch(query=question, limit=RETRIEVED_PASSAGES),
                payer=token,
            )
        except ServiceError as error:
            raise _refusal(error) from None
    knowledge = sources(hits, wanted.max_tokens)
    sent = {name: value for name, value in body.items() if name != FIELD}
    if not knowledge.text:
        return Injected(body=sent, added_bytes=0, citations=[])
    messages = list(sent["messages"])
    first = messages[0] if messages else None
    if (
        isinstance(first, dict)
        and first.get("role") in {"system", "developer"}
        and isinstance(first.get("content"), str)
    ):
        messages[0] = {**first, "content": f"{first['content']}\n\n{knowledge.text}"}
    else:
        messages.insert(0, {"role": "system", "content": knowledge.text})
    sent["messages"] = messages
    return Injected(body=sent, added_bytes=len(knowledge.text.encode()), citations=knowledge.citations)


def cited(body: bytes, citations: list[Citation]) -> bytes:
    """A whole answer with its `lyss_citations`."""
    answer = msgspec.json.decode(body)
    if isinstance(answer, dict):
        answer[CITATIONS_FIELD] = msgspec.to_builtins(citations)
    return msgspec.json.encode(answer)


async def cited_stream(chunks: AsyncIterator[bytes], citations: list[Citation]) -> AsyncIterator[bytes]:
    """The stream, with one more chunk before `[DONE]`: no choices (as the usage chunk), the `lyss_citations`.

    A stream that breaks off before `[DONE]` carries no citations chunk; the header has their count."""
    last = b""
    async for chunk in chunks:
        if not chunk.endswith(_DONE):
            last = chunk
            yield chunk
            continue
        final: dict[str, Any] = {"object": "chat.completion.chunk", "choices": []}
        # The same id, model and creation time as the chunks before it, as SDKs expect of every chunk.
        events = [line[6:] for line in (last + chunk).split(b"\n") if line.startswith(b"data: {")]
        try:
            previous = msgspec.json.decode(events[-1]) if events else {}
        except msgspec.DecodeError:
            previous = {}
        if isinstance(previous, dict):
            final |= {name: previous[name] for name in ("id", "created", "model") if name in previous}
        final[CITATIONS_FIELD] = msgspec.to_builtins(citations)
        yield chunk[: -len(_DONE)] + b"data: " + msgspec.json.encode(final) + b"\n\n" + _DONE
