"""Organizations, users, groups and the audit trail: provisioning (CLI, first start) and per-tenant changes."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from uuid import UUID

import msgspec
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.auth.passwords import WeakPasswordError, hash_password
from app.errors import InvalidRequest, NotFound
from app.observability.middleware import ClientContext
from app.tenants.plans import DEFAULT_PLAN, PlanLimitReached, require_room_for_user
from app.tenants.schemas import (
    DEFAULT_RESPONSE_RETENTION_DAYS,
    MAX_HOST_LENGTH,
    OrganizationUpdate,
    TenantPolicyUpdate,
)
from db.auth import User
from db.session import tenant_session
from db.tenant import (
    BUDGET_POLICY_FIELDS,
    SLUG_PATTERN,
    AuditEvent,
    Budget,
    Organization,
    Plan,
    UserGroup,
    UserGroupMember,
)

DEMO_TENANT_SLUG = "demo"
DEMO_ADMIN_EMAIL = "admin@demo.example.com"
_SLUG = re.compile(SLUG_PATTERN)
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class ProvisioningError(ValueError):
    """Bad input or a conflict while creating tenants or users; the message says what to change."""


class TenantRef(msgspec.Struct, frozen=True):
    id: UUID
    status: str


class TenantPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A tenant's security and retention choices, kept in `tenant_organizations.settings`."""

    require_mfa_for_admins: bool = False
    allow_self_signup: bool = False
    response_retention_days: int = DEFAULT_RESPONSE_RETENTION_DAYS
    knowledge_url_hosts: list[str] = []


def checked_url_hosts(hosts: list[str]) -> list[str]:
    """The allowed hosts of knowledge URLs in lower case, once each: DNS names (ASCII; a name in another script in
    its xn-- form) or `*.` and one, every one checked, the field named in the refusal."""
    checked: list[str] = []
    for entry in hosts:
        host = entry.strip().lower().rstrip(".")
        name = host.removeprefix("*.")
        labels = name.split(".")
        if (
            len(host) > MAX_HOST_LENGTH
            or not all(_HOST_LABEL.match(label) for label in labels)
            or (host.startswith("*.") and len(labels) < 2)
        ):
            raise InvalidRequest(
                f"`knowledge_url_hosts`: '{entry.strip()[:100]}' is not a host name; write one like "
                "docs.example.com, or *.example.com for every name under example.com.",
                field="knowledge_url_hosts",
            )
        if host not in checked:
            checked.append(host)
    return checked


def tenant_policy(organization: Organization) -> TenantPolicy:
    return msgspec.convert(organization.settings or {}, TenantPolicy)


class DemoLogin(msgspec.Struct, frozen=True):
    tenant_slug: str
    email: str
    password: str
    # Whatever the caller's `extend` step returned (the CLI: an API key for the echo channel).
    extra: Any = None


async def own_organization(session: AsyncSession, tenant_id: UUID) -> Organization:
    """The caller's organization: the session's tenant, the one row of `tenant_organizations` it may see."""
    return await session.get_one(Organization, tenant_id)


async def lookup_tenant_by_slug(session: AsyncSession, slug: str) -> TenantRef | None:
    """Find a tenant before any tenant is set, through the SECURITY DEFINER `tenant_lookup_by_slug`."""
    row = (
        await session.execute(text("SELECT id, status FROM tenant_lookup_by_slug(:slug)"), {"slug": slug})
    ).one_or_none()
    return None if row is None else TenantRef(id=row.id, status=row.status)


def record_audit_event(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    actor_user_id: UUID | None = None,
    target_type: str | None = None,
    target_id: str | UUID | None = None,
    details: dict[str, Any] | None = None,
    client: ClientContext | None = None,
) -> AuditEvent:
    client = client or ClientContext()
    event = AuditEvent(
        actor=actor,
        actor_user_id=actor_user_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=details or {},
        ip_address=client.ip_address,
        user_agent=client.user_agent[:1000] if client.user_agent else None,
        request_id=client.request_id,
    )
    session.add(event)
    return event


async def change_tenant_policy(
    session: AsyncSession,
    organization: Organization,
    data: TenantPolicyUpdate,
    *,
    actor: str,
    actor_user_id: UUID,
    client: ClientContext | None = None,
) -> TenantPolicy:
    """Set the policy fields given (the others keep their value), with an audit event."""
    changes = {name: value for name, value in msgspec.structs.asdict(data).items() if value is not None}
    if data.knowledge_url_hosts is not None:
        changes["knowledge_url_hosts"] = checked_url_hosts(data.knowledge_url_hosts)
    organization.settings = {**(organization.settings or {}), **changes}
    record_audit_event(
        session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="tenant.policy_changed",
        target_type="tenant",
        target_id=organization.id,
        details=changes,
        client=client,
    )
    await session.flush()
    return tenant_policy(organization)


async def update_organization(
    session: AsyncSession,
    organization: Organization,
    data: OrganizationUpdate,
    *,
    actor: str,
    actor_user_id: UUID,
    client: ClientContext | None = None,
) -> Organization:
    """A new display name or currency, audited when they differ; the slug people sign in with stays."""
    changes: dict[str, Any] = {}
    if data.name is not None:
        name = data.name.strip()
        if not name:
            raise InvalidRequest("The organization needs a name.", field="name")
        if name != organization.name:
            changes["name"] = {"from": organization.name, "to": name}
            organization.name = name
    if data.currency is not None and data.currency != organization.currency:
        changes["currency"] = {"from": organization.currency, "to": data.currency}
        organization.currency = data.currency
    if changes:
        record_audit_event(
            session,
            actor=actor,
            actor_user_id=actor_user_id,
            action="tenant.updated",
            target_type="tenant",
            target_id=organization.id,
            details=changes,
            client=client,
        )
    await session.flush()
    return organization


async def all_tenant_ids(session: AsyncSession) -> list[UUID]:
    """Every tenant's id, through the SECURITY DEFINER `platform_tenant_ids` (platform maintenance only)."""
    return list(await session.scalars(text("SELECT * FROM platform_tenant_ids()")))


async def group_ids_of_user(session: AsyncSession, user_id: UUID) -> list[UUID]:
    """The groups `user_id` belongs to (in the session's tenant), for domains that scope by group."""
    rows = await session.scalars(select(UserGroupMember.group_id).where(UserGroupMember.user_id == user_id))
    return list(rows)


def normalize_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise ProvisioningError(f"'{email}' is not a valid email address: {error}") from None


def _validated_tenant_fields(slug: str, name: str) -> tuple[str, str]:
    slug, name = slug.strip(), name.strip()
    if not _SLUG.match(slug):
        raise ProvisioningError(
            f"'{slug}' is not a valid slug: use 1-100 lower-case letters, digits and inner hyphens, "
            "e.g. 'acme' or 'acme-labs'"
        )
    if not name or len(name) > 255:
        raise ProvisioningError("the tenant name must be 1-255 characters long")
    return slug, name


async def _hashed_new_password(password: str, email: str) -> str:
    try:
        return await hash_password(password, email=email)
    except WeakPasswordError as error:
        raise ProvisioningError(str(error)) from None


def violated_constraint(error: IntegrityError) -> str | None:
    # SQLAlchemy wraps the asyncpg exception, which names the constraint.
    return getattr(error.orig.__cause__, "constraint_name", None) if error.orig else None


async def _add_tenant(session: AsyncSession, tenant_id: UUID, slug: str, name: str, actor: str) -> Organization:
    if await lookup_tenant_by_slug(session, slug) is not None:
        raise ProvisioningError(f"the slug '{slug}' is already taken; choose another")
    plan = await session.get_one(Plan, DEFAULT_PLAN)
    # The plan's default monthly budget is where the organization's own budget starts.
    organization = Organization(
        id=tenant_id, slug=slug, name=name, subscription_plan=plan.name, quota=plan.default_monthly_budget
    )
    session.add(organization)
    await session.flush()
    record_audit_event(session, actor=actor, action="tenant.created", target_type="tenant", target_id=tenant_id)
    return organization


async def _add_user(
    session: AsyncSession, *, tenant_slug: str, email: str, hashed_password: str, role: str, actor: str
) -> User:
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ProvisioningError(f"'{email}' already has an account in tenant '{tenant_slug}'")
    try:
        await require_room_for_user(session)
    except PlanLimitReached as error:
        raise ProvisioningError(error.detail) from None
    user = User(email=email, hashed_password=hashed_password, role=role)
    session.add(user)
    await session.flush()
    await give_new_user_budget(session, user.id)
    record_audit_event(
        session,
        actor=actor,
        action="user.created",
        target_type="user",
        target_id=user.id,
        details={"role": role},
    )
    return user


async def give_new_user_budget(session: AsyncSession, user_id: UUID) -> None:
    """A new account starts with the organization's default budget and policy for new users, if it set one."""
    default = await session.scalar(select(Budget).where(Budget.kind == "new_user"))
    if default is None:
        return
    policy = {name: getattr(default, name) for name in BUDGET_POLICY_FIELDS}
    session.add(Budget(kind="user", user_id=user_id, **policy))
    await session.flush()


async def _commit(session: AsyncSession, conflicts: dict[str, str]) -> None:
    """Commit, turning a unique violation that a concurrent writer won into the caller's message."""
    try:
        await session.commit()
    except IntegrityError as error:
        message = conflicts.get(violated_constraint(error) or "")
        if message is None:
            raise
        raise ProvisioningError(message) from None


async def create_tenant(
    session_maker: async_sessionmaker[AsyncSession], *, slug: str, name: str, actor: str
) -> Organization:
    """Create a tenant and its first audit event in one transaction."""
    slug, name = _validated_tenant_fields(slug, name)
    tenant_id = uuid7()
    async with tenant_session(session_maker, tenant_id) as session:
        organization = await _add_tenant(session, tenant_id, slug, name, actor)
        await _commit(session, {"uq_tenant_organizations_slug": f"the slug '{slug}' is already taken"})
    return organization


async def create_user(
    session_maker: async_sessionmaker[AsyncSession],
    *,
    tenant_slug: str,
    email: str,
    password: str,
    role: str,
    actor: str,
) -> User:
    """Create a user with a password in the tenant named by its slug, in one transaction."""
    email = normalize_email(email)
    hashed_password = await _hashed_new_password(password, email)
    async with session_maker() as lookup_session:
        tenant = await lookup_tenant_by_slug(lookup_session, tenant_slug)
    if tenant is None:
        raise ProvisioningError(f"no tenant has the slug '{tenant_slug}'; create it with 'lyss tenant create'")
    async with tenant_session(session_maker, tenant.id) as session:
        user = await _add_user(
            session,
            tenant_slug=tenant_slug,
            email=email,
            hashed_password=hashed_password,
            role=role,
            actor=actor,
        )
        await _commit(
            session,
            {"uk_auth_users_tenant_email": f"'{email}' already has an account in tenant '{tenant_slug}'"},
        )
    return user


async def provision_demo_tenant(
    session_maker: async_sessionmaker[AsyncSession],
    extend: Callable[[AsyncSession, UUID, User], Awaitable[Any]] | None = None,
) -> DemoLogin | None:
    """On a first start, create the `demo` tenant and its admin together; return the login to print once.

    `extend` adds more to the tenant in the same transaction (other domains' demo data).
    """
    async with session_maker() as session:
        if await lookup_tenant_by_slug(session, DEMO_TENANT_SLUG) is not None:
            return None
    password = secrets.token_urlsafe(12)
    tenant_id = uuid7()
    async with tenant_session(session_maker, tenant_id) as session:
        await _add_tenant(session, tenant_id, DEMO_TENANT_SLUG, "Demo", "first-start")
        admin = await _add_user(
            session,
            tenant_slug=DEMO_TENANT_SLUG,
            email=DEMO_ADMIN_EMAIL,
            hashed_password=await _hashed_new_password(password, DEMO_ADMIN_EMAIL),
            role="tenant_admin",
            actor="first-start",
        )
        extra = await extend(session, tenant_id, admin) if extend is not None else None
        await session.commit()
    return DemoLogin(tenant_slug=DEMO_TENANT_SLUG, email=DEMO_ADMIN_EMAIL, password=password, extra=extra)


async def set_tenant_quota(
    session_maker: async_sessionmaker[AsyncSession], *, slug: str, quota: int, actor: str
) -> int:
    """Set the organization's gateway budget (credits, -1 for none); returns what it has used so far.

    The gateway reads the budget with each key (at most LYSS_GATEWAY_CACHE_SECONDS later).
    """
    async with session_maker() as lookup_session:
        tenant = await lookup_tenant_by_slug(lookup_session, slug)
    if tenant is None:
        raise ProvisioningError(f"no tenant has the slug '{slug}'")
    async with tenant_session(session_maker, tenant.id) as session:
        organization = await session.get_one(Organization, tenant.id)
        organization.quota = quota
        record_audit_event(
            session,
            actor=actor,
            action="tenant.quota_changed",
            target_type="tenant",
            target_id=tenant.id,
            details={"quota": quota},
        )
        await session.commit()
        return organization.used_quota


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, as the audit trail names them."""

    name: str
    user_id: UUID | None = None
    client: ClientContext | None = None


def audit_change(
    session: AsyncSession, actor: Actor, action: str, target_type: str, target_id: UUID, **details: Any
) -> None:
    """An audit event for a change `actor` made to one target, with the request's address and agent."""
    record_audit_event(
        session,
        actor=actor.name,
        actor_user_id=actor.user_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details,
        client=actor.client,
    )


async def organization_user(session: AsyncSession, user_id: UUID, *, field: str | None = None) -> User:
    """A user of the session's tenant; another tenant's user is as unknown as an invented id.

    `field` names the request field that gave the id, for the refusal to point at.
    """
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user in this organization.", field=field)
    return user


async def user_group(session: AsyncSession, group_id: UUID) -> UserGroup:
    group = await session.get(UserGroup, group_id)
    if group is None:
        raise NotFound("No such group in this organization.")
    return group


async def groups_with_member_counts(session: AsyncSession) -> list[tuple[UserGroup, int]]:
    rows = await session.execute(
        select(UserGroup, func.count(UserGroupMember.id))
        .outerjoin(UserGroupMember, UserGroupMember.group_id == UserGroup.id)
        # The whole primary key: PostgreSQL lets the other columns be selected only when grouped by it.
        .group_by(UserGroup.tenant_id, UserGroup.id)
        .order_by(UserGroup.name)
    )
    return [(group, count) for group, count in rows.all()]


async def group_members(session: AsyncSession, group: UserGroup) -> list[User]:
    return list(
        await session.scalars(
            select(User)
            .join(UserGroupMember, UserGroupMember.user_id == User.id)
            .where(UserGroupMember.group_id == group.id)
            .order_by(User.email)
        )
    )


async def organization_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.email)))


async def user_email(session: AsyncSession, user_id: UUID) -> str | None:
    """The email of a user of the organization; None if there is no such user (any more)."""
    return await session.scalar(select(User.email).where(User.id == user_id))


async def user_and_organization(session: AsyncSession, user_id: UUID) -> tuple[User, Organization]:
    """A user of the session's tenant with their organization, read together."""
    row = (
        await session.execute(
            select(User, Organization).join(Organization, Organization.id == User.tenant_id).where(User.id == user_id)
        )
    ).one()
    return row[0], row[1]


async def user_emails(session: AsyncSession) -> dict[UUID, str]:
    return {row.id: row.email for row in await session.execute(select(User.id, User.email).order_by(User.email))}


async def names_of_groups(session: AsyncSession, ids: list[UUID]) -> dict[UUID, str]:
    """The names of those of `ids` that are groups of the organization; a deleted one is left out."""
    rows = await session.execute(select(UserGroup.id, UserGroup.name).where(UserGroup.id.in_(ids)))
    return {row.id: row.name for row in rows}


async def group_names_of_user(session: AsyncSession, user_id: UUID) -> list[tuple[UUID, str]]:
    rows = await session.execute(
        select(UserGroup.id, UserGroup.name)
        .join(UserGroupMember, UserGroupMember.group_id == UserGroup.id)
        .where(UserGroupMember.user_id == user_id)
        .order_by(UserGroup.name)
    )
    return [(group_id, name) for group_id, name in rows.all()]


async def budgets_by_subject(session: AsyncSession, user_id: UUID, group_ids: Iterable[UUID]) -> dict[UUID, Budget]:
    """The budget rows of a user and of the given groups, by user or group id (absent: none set yet)."""
    rows = await session.scalars(select(Budget).where(or_(Budget.user_id == user_id, Budget.group_id.in_(group_ids))))
    return {subject: row for row in rows if (subject := row.user_id or row.group_id) is not None}
