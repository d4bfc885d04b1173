"""Portal pages of the platform operator (super_admin): every organization with its usage, and one's page to
rename it, set its plan, suspend or reactivate it."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import InvalidRequest
from app.portal.forms import FormSubmission
from app.portal.web import (
    PORTAL,
    PortalRequest,
    Viewer,
    page,
    provide_operator_viewer,
    provide_viewer_actor,
    see_other,
)
from app.tenants.platform import (
    TENANT_STATUSES,
    PlatformTenants,
    TenantFilter,
    TenantOverview,
    checked_name,
    checked_plan,
    tenant_by_id,
    tenant_overview,
)

FILTERS = ("status", "plan", "created_since")
STATUS_CHOICES = [("", "Any"), *((status, status) for status in TENANT_STATUSES)]
PAGE = f"{PORTAL}/platform/tenants"


def _filters(values: dict[str, str]) -> TenantFilter:
    since = None
    if values["created_since"]:
        try:
            day = datetime.date.fromisoformat(values["created_since"])
        except ValueError:
            raise InvalidRequest("Enter a date as YYYY-MM-DD.", field="created_since") from None
        since = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
    return TenantFilter(status=values["status"] or None, plan=values["plan"] or None, created_since=since)


class PlatformTenantPages(Controller):
    path = "/platform/tenants"
    dependencies = {"viewer": Provide(provide_operator_viewer), "actor": Provide(provide_viewer_actor)}

    @get("/", summary="Tenants")
    async def list_tenants(
        self,
        viewer: NamedDependency[Viewer],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        values = {name: str(request.query_params.get(name) or "").strip()[:100] for name in FILTERS}
        tenants: list[TenantOverview] = []
        async with FormSubmission(db_session) as submission:
            filters = _filters(values)
            async with session_maker() as session:
                tenants = await tenant_overview(session, filters)
        return page(
            viewer,
            "platform/tenants.html",
            status_code=submission.status_code,
            tenants=tenants,
            values=values,
            errors=submission.errors,
            status_choices=STATUS_CHOICES,
        )

    async def _tenant_page(
        self,
        viewer: Viewer,
        session_maker: async_sessionmaker[AsyncSession],
        tenant_id: UUID,
        *,
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        async with session_maker() as session:
            tenant = await tenant_by_id(session, tenant_id)
        shown = {"name": tenant.name, "plan": tenant.subscription_plan} | (values or {})
        return page(
            viewer, "platform/tenant.html", status_code=status_code, tenant=tenant, values=shown, errors=errors or {}
        )

    @get("/{tenant_id:uuid}", summary="A tenant")
    async def show_tenant(
        self,
        tenant_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> Template:
        return await self._tenant_page(viewer, session_maker, tenant_id)

    async def _change(
        self,
        tenant_id: UUID,
        field: str,
        viewer: Viewer,
        platform_tenants: PlatformTenants,
        session_maker: async_sessionmaker[AsyncSession],
        db_session: AsyncSession,
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = await request.form()
        value = str(form.get(field) or "")
        async with session_maker() as session:
            await tenant_by_id(session, tenant_id)  # an unknown id is a 404 page, not a field error
        async with FormSubmission(db_session) as submission:
            if field == "name":
                await platform_tenants.rename(tenant_id, checked_name(value))
            else:
                await platform_tenants.set_plan(tenant_id, checked_plan(value))
        if submission.refused:
            return await self._tenant_page(
                viewer,
                session_maker,
                tenant_id,
                values={field: value[:300]},
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PAGE}/{tenant_id}", "tenant_saved")

    @post("/{tenant_id:uuid}/rename", summary="Rename a tenant")
    async def rename(
        self,
        tenant_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        platform_tenants: NamedDependency[PlatformTenants],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        return await self._change(tenant_id, "name", viewer, platform_tenants, session_maker, db_session, request)

    @post("/{tenant_id:uuid}/plan", summary="Set a tenant's plan")
    async def set_plan(
        self,
        tenant_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        platform_tenants: NamedDependency[PlatformTenants],
        session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        return await self._change(tenant_id, "plan", viewer, platform_tenants, session_maker, db_session, request)

    @post("/{tenant_id:uuid}/suspend", summary="Suspend a tenant")
    async def suspend(
        self, tenant_id: FromPath[UUID], platform_tenants: NamedDependency[PlatformTenants]
    ) -> Response[None]:
        await platform_tenants.suspend(tenant_id)
        return see_other(f"{PAGE}/{tenant_id}", "tenant_suspended")

    @post("/{tenant_id:uuid}/reactivate", summary="Reactivate a tenant")
    async def reactivate(
        self, tenant_id: FromPath[UUID], platform_tenants: NamedDependency[PlatformTenants]
    ) -> Response[None]:
        await platform_tenants.reactivate(tenant_id)
        return see_other(f"{PAGE}/{tenant_id}", "tenant_reactivated")
