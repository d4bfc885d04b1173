"""The portal's lists: keyset pages (newest first) and filter forms whose wrong fields are named, not fatal."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TypeVar
from uuid import UUID

import msgspec

from app.errors import InvalidRequest
from app.portal.forms import FormInvalid, parse
from db.memory import Memory
from db.tenant import AuditEvent, Job

PAGE_SIZE = 50
FilterStruct = TypeVar("FilterStruct", bound=msgspec.Struct)


class Keyset(msgspec.Struct, frozen=True):
    """Where a page ended: its last row's (created_at, id). The next page starts just after it."""

    created_at: datetime.datetime
    id: UUID

    @classmethod
    def of(cls, row: AuditEvent | Job | Memory) -> Keyset:
        return cls(created_at=row.created_at, id=row.id)

    @classmethod
    def parse(cls, cursor: str) -> Keyset:
        try:
            moment, _, row_id = cursor.partition("|")
            created_at = datetime.datetime.fromisoformat(moment)
            return cls(created_at=created_at.replace(tzinfo=created_at.tzinfo or datetime.UTC), id=UUID(row_id))
        except ValueError:
            raise InvalidRequest("This page link is broken; showing the newest entries instead.") from None

    def cursor(self) -> str:
        return f"{self.created_at.isoformat()}|{self.id}"


def filters_from(
    query: Mapping[str, str], names: tuple[str, ...], struct_type: type[FilterStruct]
) -> tuple[FilterStruct, dict[str, str]]:
    """A filter form's query values as `struct_type`; a wrong field is reported and left out, the rest apply."""
    raw = {name: query.get(name, "").strip() for name in names}
    given = {name: value for name, value in raw.items() if value}
    errors: dict[str, str] = {}
    try:
        return parse(struct_type, given), errors
    except FormInvalid as invalid:
        errors |= invalid.errors
    valid = {name: value for name, value in given.items() if name not in errors}
    try:
        return parse(struct_type, valid), errors
    except FormInvalid:
        return struct_type(), errors


def page_cursor(query: Mapping[str, str], errors: dict[str, str]) -> Keyset | None:
    cursor = query.get("cursor")
    if not cursor:
        return None
    try:
        return Keyset.parse(cursor)
    except InvalidRequest as error:
        errors["form"] = error.detail
        return None


def next_page_query(values: Mapping[str, str], last: Keyset | None) -> dict[str, str] | None:
    return None if last is None else {**values, "cursor": last.cursor()}
