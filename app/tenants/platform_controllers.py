"""The platform operator's API over every tenant: only for super admins, whatever their own tenant."""

from __future__ import annotations

import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.guards import requires_super_admin
from app.schemas import Input
from app.tenants.platform import (
    PlatformTenants,
    TenantFilter,
    TenantOverview,
    checked_name,
    checked_plan,
    tenant_by_id,
    tenant_overview,
)


class TenantCreate(Input):
    slug: Annotated[str, msgspec.Meta(max_length=100)]
    name: Annotated[str, msgspec.Meta(max_length=255)]


class TenantChange(Input):
    """Rename the organization, set its plan, or both."""

    name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    subscription_plan: Annotated[str, msgspec.Meta(max_length=50)] | None = None


class PlatformTenantController(Controller):
    """Tenants as a lifecycle. Reads go through a SECURITY DEFINER function of aggregates; each change runs
    in a session scoped to the tenant it changes."""

    path = "/api/platform/tenants"
    tags = ["platform"]
    guards = [requires_super_admin]

    @get("/", summary="Every tenant, with its users and its usage this month (filters: status, plan, created since)")
    async def list_tenants(
        self,
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        status: Annotated[str | None, QueryParameter(max_length=20)] = None,
        plan: Annotated[str | None, QueryParameter(max_length=50)] = None,
        created_since: FromQuery[datetime.datetime | None] = None,
    ) -> list[TenantOverview]:
        async with session_maker() as session:
            return await tenant_overview(session, TenantFilter(status=status, plan=plan, created_since=created_since))

    @post("/", status_code=HTTP_201_CREATED, summary="Create a tenant")
    async def create_tenant(
        self, data: JSONBody[TenantCreate], platform_tenants: NamedDependency[PlatformTenants]
    ) -> TenantOverview:
        return await platform_tenants.create(data.slug, data.name)

    @get("/{tenant_id:uuid}", summary="One tenant")
    async def get_tenant(
        self, tenant_id: FromPath[UUID], session_maker: NamedDependency[async_sessionmaker[AsyncSession]]
    ) -> TenantOverview:
        async with session_maker() as session:
            return await tenant_by_id(session, tenant_id)

    @patch("/{tenant_id:uuid}", summary="Rename a tenant or set its plan")
    async def change_tenant(
        self,
        tenant_id: FromPath[UUID],
        data: JSONBody[TenantChange],
        platform_tenants: NamedDependency[PlatformTenants],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> TenantOverview:
        async with session_maker() as session:
            tenant = await tenant_by_id(session, tenant_id)
        # Both checked before either is written: a bad plan must not leave the rename done.
        if data.name is not None:
            checked_name(data.name)
        if data.subscription_plan is not None:
            checked_plan(data.subscription_plan)
        if data.name is not None:
            tenant = await platform_tenants.rename(tenant_id, data.name)
        if data.subscription_plan is not None:
            tenant = await platform_tenants.set_plan(tenant_id, data.subscription_plan)
        return tenant

    @post(
        "/{tenant_id:uuid}/suspend",
        status_code=HTTP_200_OK,
        summary="Suspend a tenant (no sign-in, keys refused, jobs wait)",
    )
    async def suspend(
        self, tenant_id: FromPath[UUID], platform_tenants: NamedDependency[PlatformTenants]
    ) -> TenantOverview:
        return await platform_tenants.suspend(tenant_id)

    @post("/{tenant_id:uuid}/reactivate", status_code=HTTP_200_OK, summary="Reactivate a suspended tenant")
    async def reactivate(
        self, tenant_id: FromPath[UUID], platform_tenants: NamedDependency[PlatformTenants]
    ) -> TenantOverview:
        return await platform_tenants.reactivate(tenant_id)
