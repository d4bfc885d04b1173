"""Stored Responses API answers: kept per API key until their tenant's retention, read back, listed, chained."""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway import errors
from app.gateway.caches import TokenInfo
from app.gateway.errors import GatewayError
from app.tenants.schemas import DEFAULT_RESPONSE_RETENTION_DAYS
from db.provider import StoredResponse
from db.session import tenant_session
from db.tenant import Organization

# What an id of ours looks like; anything else names no response and never reaches the database (a NUL in a
# path would be refused by PostgreSQL with a 500 rather than a 404).
_RESPONSE_ID = re.compile(r"resp_[0-9A-Za-z]{1,59}")
# Responses a conversation may chain through `previous_response_id`: each is a query and its items are resent.
MAX_HISTORY = 100
LIST_LIMIT_DEFAULT = 20
LIST_LIMIT_MAX = 100
ListOrder = Literal["asc", "desc"]
# The prefix of an item's id by its type, as OpenAI's own ids read.
_ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(16)}"


def new_item_id(item_type: str) -> str:
    return f"{_ITEM_PREFIXES.get(item_type, 'item')}_{secrets.token_hex(16)}"


def _input_message(item: dict[str, Any]) -> dict[str, Any]:
    """A message as `input_items` lists it: typed, with its content as parts (a string is one text part)."""
    content = item.get("content")
    if isinstance(content, str):
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        content = [{"type": part, "text": content}]
    return {"type": "message", "status": "completed", **item, "content": content}


def normalise_input_items(input_: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's `input` (a string, or a list of items) as items with their ids: a string is one user
    message, a message without a type is typed `message`, and an item without an id gets one."""
    items: list[dict[str, Any]] = [{"role": "user", "content": input_}] if isinstance(input_, str) else input_
    normalised = []
    for item in items:
        shaped = dict(item)
        if shaped.get("type", "message") == "message" and "role" in shaped:
            shaped = _input_message(shaped)
        if not shaped.get("id"):
            shaped["id"] = new_item_id(str(shaped.get("type", "item")))
        normalised.append(shaped)
    return normalised


def not_found(response_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"Response with id '{errors.shown(response_id)}' not found.",
        error_type="invalid_request_error",
        param="response_id",
    )


def previous_not_found(response_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"Previous response with id '{errors.shown(response_id)}' not found.",
        error_type="invalid_request_error",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _visible(token: TokenInfo, response_id: str) -> Any:
    """The one stored response `response_id` that this key may see: its own, not yet expired."""
    return (
        StoredResponse.response_id == response_id,
        StoredResponse.token_id == token.id,
        StoredResponse.expires_at > func.now(),
    )


# The organization's retention, read in the INSERT itself (the organization row is the tenant's under RLS).
_RETENTION_DAYS = func.coalesce(
    select(Organization.settings["response_retention_days"].as_integer()).scalar_subquery(),
    DEFAULT_RESPONSE_RETENTION_DAYS,
)


async def store(
    session_maker: async_sessionmaker[AsyncSession],
    token: TokenInfo,
    response: dict[str, Any],
    input_items: str | list[dict[str, Any]],
    previous_response_id: str | None,
) -> list[dict[str, Any]]:
    """Keep `response` (the Response object as sent to the client, its `id` from `new_response_id`) and this
    turn's input items, for the organization's retention (`response_retention_days`). The items are stored
    normalised (`normalise_input_items`) and returned so."""
    response_id = str(response.get("id", ""))
    if not _RESPONSE_ID.fullmatch(response_id):
        raise ValueError(f"A stored response needs an id from new_response_id(), not {response_id!r}.")
    items = normalise_input_items(input_items)
    async with tenant_session(session_maker, token.tenant_id) as session:
        # Kept before the answer is sent, so the commit is on the call's path: it does not wait for the WAL to
        # reach the disk. A crash may lose the last moment's stored responses (their continuation is a 404),
        # never corrupt them; nothing here is money, which the usage log keeps with a durable commit.
        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        await session.execute(
            insert(StoredResponse).values(
                tenant_id=token.tenant_id,
                response_id=response_id,
                token_id=token.id,
                user_id=token.user_id,
                model=str(response.get("model", ""))[:200],
                previous_response_id=previous_response_id,
                input_items=items,
                response=response,
                expires_at=func.now() + func.make_interval(0, 0, 0, _RETENTION_DAYS),
            )
        )
        await session.commit()
    return items


async def history(
    session_maker: async_sessionmaker[AsyncSession], token: TokenInfo, response_id: str
) -> list[dict[str, Any]]:
    """The conversation up to and including `response_id`, oldest first, as input items: each turn's input
    items, then its output items. A response of the chain that this key cannot see (unknown, another key's,
    expired or deleted) is a 404 naming `previous_response_id`; a chain longer than MAX_HISTORY, a 400."""
    turns: list[StoredResponse] = []
    wanted: str | None = response_id
    async with tenant_session(session_maker, token.tenant_id) as session:
        while wanted is not None:
            if len(turns) == MAX_HISTORY:
                raise errors.invalid_request(
                    f"This conversation is longer than {MAX_HISTORY} responses; start a new one, or send its "
                    "history as input.",
                    param="previous_response_id",
                )
            if not _RESPONSE_ID.fullmatch(wanted):
                raise previous_not_found(wanted)
            row = await session.scalar(select(StoredResponse).where(*_visible(token, wanted)))
            if row is None:
                raise previous_not_found(wanted)
            turns.append(row)
            wanted = row.previous_response_id
    items: list[dict[str, Any]] = []
    for turn in reversed(turns):
        items.extend(turn.input_items)
        items.extend(turn.response.get("output") or [])
    return items


async def _own(session: AsyncSession, token: TokenInfo, response_id: str) -> StoredResponse:
    row = (
        await session.scalar(select(StoredResponse).where(*_visible(token, response_id)))
        if _RESPONSE_ID.fullmatch(response_id)
        else None
    )
    if row is None:
        raise not_found(response_id)
    return row


async def get(session_maker: async_sessionmaker[AsyncSession], token: TokenInfo, response_id: str) -> dict[str, Any]:
    """The Response object as the client first got it (`GET /v1/responses/{id}`)."""
    async with tenant_session(session_maker, token.tenant_id) as session:
        return (await _own(session, token, response_id)).response


async def delete(session_maker: async_sessionmaker[AsyncSession], token: TokenInfo, response_id: str) -> dict[str, Any]:
    """Forget the response (`DELETE /v1/responses/{id}`): it can no longer be read nor continued from."""
    async with tenant_session(session_maker, token.tenant_id) as session:
        row = await _own(session, token, response_id)
        await session.execute(sql_delete(StoredResponse).where(StoredResponse.id == row.id))
        await session.commit()
    return {"id": response_id, "object": "response", "deleted": True}


async def input_items(
    session_maker: async_sessionmaker[AsyncSession],
    token: TokenInfo,
    response_id: str,
    *,
    limit: int = LIST_LIMIT_DEFAULT,
    order: str = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    """A page of the response's input items in OpenAI's list shape (`GET /v1/responses/{id}/input_items`):
    in `order`, those after the item `after` and before the item `before`, at most `limit`."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise errors.invalid_request(f"`limit` must be between 1 and {LIST_LIMIT_MAX}.", param="limit")
    if order not in ("asc", "desc"):
        raise errors.invalid_request("`order` must be 'asc' or 'desc'.", param="order")
    async with tenant_session(session_maker, token.tenant_id) as session:
        items = list((await _own(session, token, response_id)).input_items)
    if order == "desc":
        items.reverse()
    ids = [item.get("id") for item in items]
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and cursor not in ids:
            raise errors.invalid_request(
                f"The response has no input item with id '{errors.shown(cursor)}' to list from.", param=name
            )
    start = ids.index(after) + 1 if after is not None else 0
    end = ids.index(before) if before is not None else len(items)
    window = items[start:end]
    page = window[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(window) > limit,
    }


async def prune_expired(session: AsyncSession) -> int:
    """Delete the tenant's expired responses (already out of every read); how many went."""
    result = await session.execute(sql_delete(StoredResponse).where(StoredResponse.expires_at <= func.now()))
    return int(result.rowcount)  # type: ignore[attr-defined]
