"""Budgets and policies of people and groups (and the default for new users): read, set, given to new accounts."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway.caches import GatewayCatalog, announce_change
from app.schemas import Input
from app.tenants.services import (
    Actor,
    audit_change,
    budgets_by_subject,
    group_names_of_user,
    organization_user,
    user_group,
)
from db.provider import Channel
from db.tenant import BUDGET_POLICY_FIELDS, Budget

BudgetKind = Literal["user", "group", "new_user"]
BudgetPeriod = Literal["none", "daily", "weekly", "monthly"]
# Redis counts in doubles, exact up to 2**53: a larger budget could not be told from its neighbours.
BudgetCredits = Annotated[int, msgspec.Meta(ge=-1, le=2**53 - 1)]
PerMinute = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
InFlight = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class BudgetWrite(Input):
    """A budget and policy; fields left out keep their value. Credits are millionths of the currency."""

    quota: BudgetCredits | None = None
    budget_period: BudgetPeriod | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    # A user's requests (and, of those, streams) in flight at once; 0: no limit. Not applied to groups.
    max_concurrent: InFlight | None = None
    max_streams: InFlight | None = None
    # Empty: every model the channels serve.
    allowed_models: Annotated[list[ModelName], msgspec.Meta(max_length=500)] | None = None


class BudgetRead(msgspec.Struct, frozen=True):
    kind: str
    subject_id: UUID | None
    # The group's name, for a group's budget.
    name: str | None
    quota: int
    used_quota: int
    # What is left this period (None: no limit); what PostgreSQL has counted, up to a second behind.
    remaining: int | None
    budget_period: str
    budget_reset_at: datetime.datetime | None
    rpm_limit: int
    tpm_limit: int
    max_concurrent: int
    max_streams: int
    allowed_models: list[str]


def _read(kind: str, subject_id: UUID | None, row: Budget | None, name: str | None = None) -> BudgetRead:
    if row is None:
        return BudgetRead(kind, subject_id, name, -1, 0, None, "none", None, 0, 0, 0, 0, [])
    remaining = None if row.quota < 0 else max(row.quota - row.used_quota, 0)
    return BudgetRead(
        kind,
        subject_id,
        name,
        row.quota,
        row.used_quota,
        remaining,
        row.budget_period,
        row.budget_reset_at,
        row.rpm_limit,
        row.tpm_limit,
        row.max_concurrent,
        row.max_streams,
        list(row.allowed_models),
    )


def _subject_filter(kind: BudgetKind, subject_id: UUID | None) -> Any:
    if kind == "user":
        return Budget.user_id == subject_id
    if kind == "group":
        return Budget.group_id == subject_id
    return Budget.kind == "new_user"


async def read_budget(session: AsyncSession, kind: BudgetKind, subject_id: UUID | None = None) -> BudgetRead:
    """A user's, a group's or the new-user default budget (no limits where none was set); 404 for a user or
    group that is not the organization's."""
    name = None
    if kind == "user" and subject_id is not None:
        await organization_user(session, subject_id)
    elif kind == "group" and subject_id is not None:
        name = (await user_group(session, subject_id)).name
    row = await session.scalar(select(Budget).where(_subject_filter(kind, subject_id)))
    return _read(kind, subject_id, row, name)


async def budgets_of_member(session: AsyncSession, user_id: UUID) -> list[BudgetRead]:
    """What bounds a user's spending: their own budget, then each of their groups' (by name)."""
    groups = await group_names_of_user(session, user_id)
    by_subject = await budgets_by_subject(session, user_id, [group_id for group_id, _ in groups])
    return [_read("user", user_id, by_subject.get(user_id))] + [
        _read("group", group_id, by_subject.get(group_id), name) for group_id, name in groups
    ]


async def policy_models(session: AsyncSession, budget: BudgetRead) -> list[str]:
    """The models a policy can name: those the organization's enabled channels serve, and those it names."""
    served = await session.scalars(select(Channel.models).where(Channel.status == "enabled"))
    return sorted({model for models in served for model in models} | set(budget.allowed_models))


class BudgetService:
    """Sets budgets for the API and the portal: validated, audited, committed and announced to the gateway."""

    def __init__(self, session: AsyncSession, redis: Redis, catalog: GatewayCatalog) -> None:
        self.session = session
        self.redis = redis
        self.catalog = catalog

    async def set(self, actor: Actor, kind: BudgetKind, subject_id: UUID | None, data: BudgetWrite) -> BudgetRead:
        """Change a budget; what it has used so far stays (a new period starts on the period's boundary)."""
        target: UUID | None = None
        name: str | None = None
        if kind == "user" and subject_id is not None:
            target = (await organization_user(self.session, subject_id)).id
        elif kind == "group" and subject_id is not None:
            group = await user_group(self.session, subject_id)
            target, name = group.id, group.name
        row = await self.session.scalar(select(Budget).where(_subject_filter(kind, target)).with_for_update())
        if row is None:
            row = Budget(
                kind=kind, user_id=target if kind == "user" else None, group_id=target if kind == "group" else None
            )
            self.session.add(row)
        changes: dict[str, Any] = {}
        for name in BUDGET_POLICY_FIELDS:
            value = getattr(data, name)
            if value is None:
                continue
            if name == "allowed_models":
                value = sorted(set(value))
            before = getattr(row, name, None)
            if before != value:
                changes[name] = {"from": before, "to": value}
                setattr(row, name, value)
        await self.session.flush()
        if changes:
            audit_change(self.session, actor, "budget.changed", kind, target or row.id, **changes)
        await self.session.commit()
        await announce_change(self.redis, self.catalog, f"tenant:{row.tenant_id}")
        return _read(kind, target, row, name)
