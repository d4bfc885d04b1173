"""HTTP endpoints of the auth domain: who the caller is."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from app.auth.tokens import Principal
from app.tenants.schemas import UserRead
from app.tenants.services import UserService


class IdentityController(Controller):
    path = "/api/me"
    tags = ["auth"]
    dependencies = {"users": Provide(create_service_provider(UserService))}

    @get("/", summary="The signed-in user")
    async def get_current_user(
        self, request: Request[Principal, str, State], users: NamedDependency[UserService]
    ) -> UserRead:
        user = await users.get(request.user.user_id)
        return users.to_schema(user, schema_type=UserRead)
