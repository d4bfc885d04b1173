"""HTTP endpoints of the tenants domain: the caller's own organization."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from app.auth.tokens import Principal
from app.tenants.schemas import OrganizationRead
from app.tenants.services import OrganizationService


class TenantController(Controller):
    path = "/api/tenant"
    tags = ["tenants"]
    dependencies = {"organizations": Provide(create_service_provider(OrganizationService))}

    @get("/", summary="The caller's organization")
    async def get_own_tenant(
        self, request: Request[Principal, str, State], organizations: NamedDependency[OrganizationService]
    ) -> OrganizationRead:
        organization = await organizations.get(request.user.tenant_id)
        return organizations.to_schema(organization, schema_type=OrganizationRead)
