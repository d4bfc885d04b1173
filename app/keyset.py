"""Keyset pagination of newest-first lists: a page ends at its last row's (created_at, id)."""

from __future__ import annotations

import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from app.errors import InvalidRequest


class _Row(Protocol):
    @property
    def created_at(self) -> datetime.datetime: ...

    @property
    def id(self) -> UUID: ...


class Keyset(msgspec.Struct, frozen=True):
    """Where a page ended: its last row's (created_at, id). The next page starts just after it."""

    created_at: datetime.datetime
    id: UUID

    @classmethod
    def of(cls, row: _Row) -> Keyset:
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
