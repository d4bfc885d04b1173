"""HTTP endpoints of the tenants domain: the caller's own organization and its security policy."""

from __future__ import annotations

from typing import Any

import msgspec
from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from app.auth.guards import requires_tenant_admin
from app.auth.tokens import Principal
from app.observability.middleware import client_context
from app.tenants.schemas import OrganizationRead, TenantPolicyRead, TenantPolicyUpdate
from app.tenants.services import OrganizationService, change_tenant_policy, tenant_policy
from db.auth import User


class TenantController(Controller):
    path = "/api/tenant"
    tags = ["tenants"]
    dependencies = {"organizations": Provide(create_service_provider(OrganizationService))}

    @get("/", summary="The caller's organization")
    async def get_own_tenant(
        self, request: Request[Principal, Any, State], organizations: NamedDependency[OrganizationService]
    ) -> OrganizationRead:
        organization = await organizations.get(request.user.tenant_id)
        return organizations.to_schema(organization, schema_type=OrganizationRead)

    @get("/policy", guards=[requires_tenant_admin], summary="The organization's security policy")
    async def get_policy(
        self, request: Request[Principal, Any, State], organizations: NamedDependency[OrganizationService]
    ) -> TenantPolicyRead:
        policy = tenant_policy(await organizations.get(request.user.tenant_id))
        return TenantPolicyRead(**msgspec.structs.asdict(policy))

    @patch("/policy", guards=[requires_tenant_admin], summary="Change the security policy")
    async def update_policy(
        self,
        data: JSONBody[TenantPolicyUpdate],
        request: Request[Principal, Any, State],
        organizations: NamedDependency[OrganizationService],
    ) -> TenantPolicyRead:
        organization = await organizations.get(request.user.tenant_id)
        admin = await organizations.repository.session.get_one(User, request.user.user_id)
        policy = await change_tenant_policy(
            organizations.repository.session,
            organization,
            data,
            actor=admin.email,
            actor_user_id=request.user.user_id,
            client=client_context(request),
        )
        return TenantPolicyRead(**msgspec.structs.asdict(policy))
