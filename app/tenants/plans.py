"""Plans: what an organization may have (users, channels, keys, features), read from `platform_plans` and enforced."""

from __future__ import annotations

from uuid import UUID

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotAllowed
from app.schemas import read_as
from app.tenants.schemas import OrganizationRead
from db.auth import User
from db.provider import ApiToken, Channel
from db.tenant import Organization, Plan

DEFAULT_PLAN = "basic"
UNLIMITED = -1


class PlanLimitReached(NotAllowed):
    """A change the organization's plan does not allow; the message names the plan and the limit."""


class PlanLimit(msgspec.Struct, frozen=True):
    """One limit and how much of it is in use (`limit` -1: none)."""

    limit: int
    used: int


class PlanRead(msgspec.Struct, frozen=True):
    name: str
    display_name: str
    max_users: int
    default_monthly_budget: int
    allowed_provider_types: list[str]
    max_channels: int
    max_api_keys_per_user: int
    features: dict[str, bool]


class PlanUsage(msgspec.Struct, frozen=True):
    """The caller's organization's plan, and its use of each limit (API keys: the caller's own)."""

    plan: PlanRead
    users: PlanLimit
    channels: PlanLimit
    api_keys: PlanLimit


def feature_on(plan: Plan, feature: str) -> bool:
    # A feature a plan does not name is on: a new feature is not taken away from existing plans.
    return bool(plan.features.get(feature, True))


async def plan_named(session: AsyncSession, name: str) -> Plan | None:
    return await session.get(Plan, name)


async def plan_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Plan.name).order_by(Plan.name)))


async def organization_plan(session: AsyncSession, *, lock: bool = False) -> Plan:
    """The plan of the session's organization; `lock` holds the organization's row until the transaction ends,
    so that concurrent checks of a limit run one after the other and never both see room for one more."""
    statement = select(Organization.subscription_plan)
    if lock:
        statement = statement.with_for_update()
    return await session.get_one(Plan, await session.scalar(statement))


async def active_users(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(User).where(User.status == "active")) or 0


async def require_room_for_user(session: AsyncSession, *, field: str | None = None) -> None:
    """Refuse a new active user beyond the plan's `max_users` (deactivated users do not count).

    Takes the organization's row lock: the caller's transaction adds the user and commits before another
    one can count."""
    plan = await organization_plan(session, lock=True)
    if plan.max_users != UNLIMITED and await active_users(session) >= plan.max_users:
        raise PlanLimitReached(
            f"The {plan.display_name} plan allows {plan.max_users} active users and the organization has reached "
            "it; deactivate a user or ask the platform operator for a larger plan.",
            field=field,
        )


async def require_room_for_channel(session: AsyncSession, provider_type: str) -> None:
    plan = await organization_plan(session, lock=True)
    if plan.allowed_provider_types and provider_type not in plan.allowed_provider_types:
        allowed = ", ".join(plan.allowed_provider_types)
        raise PlanLimitReached(
            f"The {plan.display_name} plan does not include {provider_type} channels; it allows: {allowed}.",
            field="type",
        )
    count = await session.scalar(select(func.count()).select_from(Channel)) or 0
    if plan.max_channels != UNLIMITED and count >= plan.max_channels:
        raise PlanLimitReached(
            f"The {plan.display_name} plan allows {plan.max_channels} channels and the organization has reached "
            "it; delete a channel or ask the platform operator for a larger plan.",
            field="name",
        )


async def api_keys_of(session: AsyncSession, user_id: UUID) -> int:
    return await session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.user_id == user_id)) or 0


async def require_room_for_api_key(session: AsyncSession, user_id: UUID) -> None:
    plan = await organization_plan(session, lock=True)
    if plan.max_api_keys_per_user != UNLIMITED and await api_keys_of(session, user_id) >= plan.max_api_keys_per_user:
        raise PlanLimitReached(
            f"The {plan.display_name} plan allows {plan.max_api_keys_per_user} API keys per user and this user "
            "has reached it; revoke a key first.",
            field="name",
        )


async def require_feature(session: AsyncSession, feature: str, *, label: str, field: str | None = None) -> None:
    plan = await organization_plan(session)
    if not feature_on(plan, feature):
        raise PlanLimitReached(
            f"The {plan.display_name} plan does not include {label}; ask the platform operator for a plan that does.",
            field=field,
        )


async def plan_usage(session: AsyncSession, user_id: UUID) -> PlanUsage:
    plan = await organization_plan(session)
    return PlanUsage(
        plan=msgspec.convert(plan, PlanRead, from_attributes=True),
        users=PlanLimit(limit=plan.max_users, used=await active_users(session)),
        channels=PlanLimit(
            limit=plan.max_channels, used=await session.scalar(select(func.count()).select_from(Channel)) or 0
        ),
        api_keys=PlanLimit(limit=plan.max_api_keys_per_user, used=await api_keys_of(session, user_id)),
    )


async def organization_read(session: AsyncSession, organization: Organization) -> OrganizationRead:
    # The user limit is the plan's: the organization has no column of its own for it.
    return read_as(OrganizationRead, organization, max_users=(await organization_plan(session)).max_users)
