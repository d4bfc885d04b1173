"""The platform operator's tenants: the cross-tenant overview, and creating, renaming, suspending, reactivating
and re-planning an organization (each change audited in that tenant's log and announced to the gateway)."""

from __future__ import annotations

import datetime
import re
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from saq.queue.redis import RedisQueue
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.redis_store import AuthStore
from app.auth.services import end_sessions
from app.errors import InvalidRequest, NotFound
from app.gateway.caches import GatewayCatalog, announce_change, announce_keys
from app.jobs.services import add_event, enqueue, new_queue_key
from app.observability.middleware import ClientContext
from app.settings import Settings
from app.tenants.money import format_money
from app.tenants.plans import plan_named, plan_names
from app.tenants.services import ProvisioningError, create_tenant, record_audit_event
from db.auth import User
from db.provider import ApiToken
from db.session import tenant_session
from db.tenant import ORGANIZATION_STATUSES, Job, Organization

# The states an organization can be in, as filters offer them.
TENANT_STATUSES = ORGANIZATION_STATUSES
PLAN_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,48}[a-z0-9])?$")
NAME_LIMIT = 255


class TenantOverview(msgspec.Struct, frozen=True):
    """One organization as the operator sees it: its own row's identity and state, and aggregates only."""

    id: UUID
    slug: str
    name: str
    status: str
    subscription_plan: str
    max_users: int
    quota: int
    currency: str
    created_at: datetime.datetime
    users: int
    requests_this_month: int
    cost_this_month: int


class TenantFilter(msgspec.Struct, frozen=True):
    status: str | None = None
    plan: str | None = None
    created_since: datetime.datetime | None = None


def check_filter(filters: TenantFilter) -> TenantFilter:
    if filters.status is not None and filters.status not in TENANT_STATUSES:
        raise InvalidRequest(f"status must be one of: {', '.join(TENANT_STATUSES)}.", field="status")
    if filters.plan is not None and not PLAN_PATTERN.match(filters.plan):
        raise InvalidRequest(_PLAN_RULE, field="plan")
    return filters


_PLAN_RULE = "A plan is a name of 1-50 lower-case letters, digits, '-' or '_', e.g. 'basic' or 'pro'."


async def tenant_overview(session: AsyncSession, filters: TenantFilter | None = None) -> list[TenantOverview]:
    """Every tenant with its usage this month, through the SECURITY DEFINER `platform_tenant_overview`."""
    filters = check_filter(filters or TenantFilter())
    rows = (await session.execute(text("SELECT * FROM platform_tenant_overview()"))).mappings().all()
    tenants = [msgspec.convert(dict(row), TenantOverview) for row in rows]
    return [
        tenant
        for tenant in tenants
        if (filters.status is None or tenant.status == filters.status)
        and (filters.plan is None or tenant.subscription_plan == filters.plan)
        and (filters.created_since is None or tenant.created_at >= filters.created_since)
    ]


async def tenant_by_slug(session: AsyncSession, slug: str) -> TenantOverview:
    for tenant in await tenant_overview(session):
        if tenant.slug == slug:
            return tenant
    raise NotFound(f"No tenant has the slug '{slug}'.", field="slug")


async def tenant_by_id(session: AsyncSession, tenant_id: UUID) -> TenantOverview:
    for tenant in await tenant_overview(session):
        if tenant.id == tenant_id:
            return tenant
    raise NotFound("No such tenant.")


def checked_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidRequest("The organization needs a name.", field="name")
    if len(name) > NAME_LIMIT:
        raise InvalidRequest(f"The name is {len(name)} characters long; at most {NAME_LIMIT}.", field="name")
    return name


def checked_plan(plan: str) -> str:
    plan = plan.strip()
    if not PLAN_PATTERN.match(plan):
        raise InvalidRequest(_PLAN_RULE, field="plan")
    return plan


class PlatformTenants:
    """The operator's changes to organizations. Each runs in a session scoped to the tenant it changes (RLS
    as for the tenant itself, never a role that bypasses it), commits with its audit event, then tells every
    gateway worker to drop what it cached of the tenant."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        redis: Redis,
        catalog: GatewayCatalog,
        queue: RedisQueue,
        settings: Settings,
        *,
        actor: str,
        actor_user_id: UUID | None = None,
        client: ClientContext | None = None,
    ) -> None:
        self.session_maker = session_maker
        self.redis = redis
        self.catalog = catalog
        self.queue = queue
        self.settings = settings
        self.actor = actor
        self.actor_user_id = actor_user_id
        self.client = client

    async def _overview(self, tenant_id: UUID) -> TenantOverview:
        async with self.session_maker() as session:
            return await tenant_by_id(session, tenant_id)

    async def create(self, slug: str, name: str) -> TenantOverview:
        name = checked_name(name)
        try:
            organization = await create_tenant(self.session_maker, slug=slug, name=name, actor=self.actor)
        except ProvisioningError as error:
            raise InvalidRequest(str(error), field="slug") from None
        return await self._overview(organization.id)

    async def rename(self, tenant_id: UUID, name: str) -> TenantOverview:
        name = checked_name(name)
        async with tenant_session(self.session_maker, tenant_id) as session:
            organization = await self._locked(session, tenant_id)
            if organization.name != name:
                self._audit(session, tenant_id, "tenant.renamed", {"from": organization.name, "to": name})
                organization.name = name
            await session.commit()
        return await self._overview(tenant_id)

    async def set_plan(self, tenant_id: UUID, plan: str) -> TenantOverview:
        plan = checked_plan(plan)
        async with tenant_session(self.session_maker, tenant_id) as session:
            if await plan_named(session, plan) is None:
                names = ", ".join(await plan_names(session))
                raise InvalidRequest(f"There is no plan '{plan}'; the plans are: {names}.", field="plan")
            organization = await self._locked(session, tenant_id)
            if organization.subscription_plan != plan:
                details = {"from": organization.subscription_plan, "to": plan}
                self._audit(session, tenant_id, "tenant.plan_changed", details)
                organization.subscription_plan = plan
            await session.commit()
        await announce_change(self.redis, self.catalog, f"tenant:{tenant_id}")
        return await self._overview(tenant_id)

    async def suspend(self, tenant_id: UUID) -> TenantOverview:
        """Its users cannot sign in, its keys are refused, its jobs wait; nothing is deleted."""
        await self._set_status(tenant_id, "suspended")
        return await self._overview(tenant_id)

    async def reactivate(self, tenant_id: UUID) -> TenantOverview:
        """Everything back as it was; the jobs that waited are sent to the queue again."""
        await self._set_status(tenant_id, "active")
        await self._resume_jobs(tenant_id)
        return await self._overview(tenant_id)

    async def _set_status(self, tenant_id: UUID, status: str) -> None:
        async with tenant_session(self.session_maker, tenant_id) as session:
            organization = await self._locked(session, tenant_id)
            changed = organization.status != status
            if changed:
                action = "tenant.suspended" if status == "suspended" else "tenant.reactivated"
                self._audit(session, tenant_id, action, {"from": organization.status, "to": status})
                organization.status = status
            key_hashes = list(await session.scalars(select(ApiToken.key_hash)))
            if changed and status == "suspended":
                # Signed out at once: the sign-in and refresh checks alone would leave access tokens live.
                store = AuthStore(self.redis)
                for user_id in list(await session.scalars(select(User.id))):
                    await end_sessions(session, store, self.settings, "tenant_suspended", user_id=user_id)
            await session.commit()
        if changed:
            # Every worker caches each key with whether its tenant is active: drop them all now.
            await announce_keys(self.redis, self.catalog, key_hashes)
            await announce_change(self.redis, self.catalog, f"tenant:{tenant_id}")

    async def _resume_jobs(self, tenant_id: UUID) -> None:
        # A job the worker left waiting keeps its record `queued`; a new queue key makes any stale message moot.
        async with tenant_session(self.session_maker, tenant_id) as session:
            waiting = list(await session.scalars(select(Job).where(Job.status == "queued").with_for_update()))
            for job in waiting:
                job.queue_key = new_queue_key(job.id)
                await add_event(
                    session, job.id, "resumed", attempt=job.attempts, message="The organization was reactivated."
                )
            await session.commit()
        for job in waiting:
            await enqueue(self.queue, job, self.settings)

    async def _locked(self, session: AsyncSession, tenant_id: UUID) -> Organization:
        organization = await session.scalar(select(Organization).where(Organization.id == tenant_id).with_for_update())
        if organization is None:
            raise NotFound("No such tenant.")
        return organization

    def _audit(self, session: AsyncSession, tenant_id: UUID, action: str, details: dict[str, str]) -> None:
        record_audit_event(
            session,
            actor=self.actor,
            actor_user_id=None,
            action=action,
            target_type="tenant",
            target_id=tenant_id,
            details={**details, **({"operator_user_id": str(self.actor_user_id)} if self.actor_user_id else {})},
            client=self.client,
        )


def tenant_table(tenants: list[TenantOverview]) -> str:
    """The operator's list as plain text columns (`lyss tenant list`)."""
    header = ("SLUG", "NAME", "STATUS", "PLAN", "USERS", "CREATED", "REQUESTS", "COST")
    rows = [
        (
            tenant.slug,
            tenant.name if len(tenant.name) <= 30 else f"{tenant.name[:29]}…",
            tenant.status,
            tenant.subscription_plan,
            str(tenant.users),
            tenant.created_at.date().isoformat(),
            str(tenant.requests_this_month),
            format_money(tenant.cost_this_month, tenant.currency),
        )
        for tenant in tenants
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def tenant_description(tenant: TenantOverview) -> str:
    """One tenant as `lyss tenant show` prints it."""
    quota = "no limit" if tenant.quota < 0 else format_money(tenant.quota, tenant.currency)
    lines = [
        ("slug", tenant.slug),
        ("name", tenant.name),
        ("id", str(tenant.id)),
        ("status", tenant.status),
        ("plan", tenant.subscription_plan),
        ("users", f"{tenant.users} active (at most {tenant.max_users})"),
        ("created", tenant.created_at.isoformat(timespec="seconds")),
        ("gateway budget", quota),
        (
            "this month",
            f"{tenant.requests_this_month} requests, {format_money(tenant.cost_this_month, tenant.currency)}",
        ),
    ]
    return "\n".join(f"{label:<15} {value}" for label, value in lines)
