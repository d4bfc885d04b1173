"""The audit trail as its readers see it: filters and newest-first pages, for the API and the portal alike."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Annotated, Any
from uuid import UUID

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.keyset import Keyset
from app.schemas import read_as
from app.tenants.schemas import AuditEventRead
from db.tenant import AuditEvent


class AuditFilter(msgspec.Struct, frozen=True):
    since: datetime.date | None = None
    until: datetime.date | None = None
    # "login" finds every login.* event, "login.failed" only those.
    action: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    user_id: UUID | None = None
    # The actor as recorded: an email (also of failed sign-ins with an unknown address), "system", a job.
    actor: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    target_type: Annotated[str, msgspec.Meta(max_length=50)] | None = None

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.since is not None:
            found.append(AuditEvent.created_at >= _start_of(self.since))
        if self.until is not None and self.until < datetime.date.max:  # the whole day, in UTC
            found.append(AuditEvent.created_at < _start_of(self.until + datetime.timedelta(days=1)))
        if self.action is not None:
            found.append(
                or_(AuditEvent.action == self.action, AuditEvent.action.startswith(f"{self.action}.", autoescape=True))
            )
        if self.user_id is not None:
            found.append(AuditEvent.actor_user_id == self.user_id)
        if self.actor is not None:
            found.append(AuditEvent.actor == self.actor)
        if self.target_type is not None:
            found.append(AuditEvent.target_type == self.target_type)
        return found


def _start_of(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)


async def audit_page(
    session: AsyncSession, filters: AuditFilter, *, after: Keyset | None, limit: int
) -> tuple[list[AuditEvent], Keyset | None]:
    """Newest first, keyset-paginated on (created_at, id): any page costs what the first one costs."""
    statement = select(AuditEvent).where(*filters.conditions())
    if after is not None:
        # `<=` alone is what the (tenant_id, created_at) index can range over; the id breaks ties.
        statement = statement.where(
            AuditEvent.created_at <= after.created_at,
            or_(AuditEvent.created_at < after.created_at, AuditEvent.id < after.id),
        )
    statement = statement.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(statement))
    return rows[:limit], Keyset.of(rows[limit - 1]) if len(rows) > limit else None


def audit_event_read(event: AuditEvent) -> AuditEventRead:
    ip_address = str(event.ip_address) if event.ip_address is not None else None
    return read_as(AuditEventRead, event, ip_address=ip_address)


ARROW = "→"


def readable_details(details: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """An event's details as lines people read rather than a dict: "name: Old → New" (from `old_name`
    beside `name`, or a `{"from", "to"}` pair), lists joined, nested values flattened one level, empty
    values left out. `names` turns the ids it knows (users' emails by id) into names."""
    names = names or {}
    lines = []
    for key, value in details.items():
        if value is None or (key.startswith("old_") and key[4:] in details):
            continue
        label = key.replace("_", " ")
        if key.endswith("_id") and isinstance(value, str) and value in names:
            lines.append(f"{label[:-3]}: {names[value]}")
        elif f"old_{key}" in details:
            lines.append(f"{label}: {_plain(details[f'old_{key}'], names)} {ARROW} {_plain(value, names)}")
        elif isinstance(value, Mapping) and set(value) == {"from", "to"}:
            lines.append(f"{label}: {_plain(value['from'], names)} {ARROW} {_plain(value['to'], names)}")
        elif isinstance(value, Mapping):
            lines.extend(
                f"{label} {inner.replace('_', ' ')}: {_plain(item, names)}"
                for inner, item in value.items()
                if item is not None
            )
        else:
            lines.append(f"{label}: {_plain(value, names)}")
    return lines


def _plain(value: Any, names: Mapping[str, str]) -> str:
    """One value as text: an id it knows as its name, yes/no, a list joined; deeper structures as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list | tuple):
        return ", ".join(_plain(item, names) for item in value) if value else "none"
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)
