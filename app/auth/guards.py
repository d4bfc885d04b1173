"""Guards: which roles may reach a route, and what a session restricted to MFA enrolment may do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.auth.tokens import SCOPE_FULL, Principal

# A route that a session restricted to MFA enrolment may reach carries this in its `opt`.
ALLOWS_MFA_ENROLLMENT_SCOPE = "allows_mfa_enrollment_scope"

# Guards are coroutines on purpose: Litestar runs a plain function guard in a worker thread, a hop that
# doubled the cost of the cheapest request when the app-wide guard below was one.
Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]  # type: ignore[type-arg]


def requires_role(*roles: str) -> Guard:
    """Only these roles (and the platform's super admins) may pass."""
    allowed = {*roles, "super_admin"}

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal) or principal.role not in allowed:
            raise PermissionDeniedException(f"This needs one of the roles: {', '.join(sorted(allowed))}.")

    return guard


requires_tenant_admin = requires_role("tenant_admin")
# The platform operator: a super admin, whatever tenant their account belongs to.
requires_super_admin = requires_role()


async def full_session_only(connection: ASGIConnection, route_handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """App-wide: a session opened only to enrol MFA (tenant policy) reaches the enrolment routes and nothing else."""
    principal = connection.scope.get("user")
    if (
        isinstance(principal, Principal)
        and principal.scope != SCOPE_FULL
        and not route_handler.opt.get(ALLOWS_MFA_ENROLLMENT_SCOPE)
    ):
        raise PermissionDeniedException(
            "Your organization requires two-factor authentication: enrol with POST /api/auth/mfa/enroll and "
            "POST /api/auth/mfa/confirm, then sign in again."
        )
