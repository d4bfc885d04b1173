"""Maintenance mode at the edge: writes refused while it is on, and the operator's switch under /api/platform."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, delete, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guards import requires_role
from app.observability.maintenance import (
    OPEN_WRITES,
    MaintenanceInput,
    MaintenanceStatus,
    MaintenanceSwitch,
    UnderMaintenance,
    switch_off,
    switch_on,
)
from app.tenants.services import Actor

# Where a page's template finds the switch's state (the banner).
MAINTENANCE_STATE = "maintenance"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

BeforeRequest = Callable[[Request[Any, Any, State]], Awaitable[None]]


def refusing_writes(switch: MaintenanceSwitch, then: BeforeRequest) -> BeforeRequest:
    """The app's `before_request`: while maintenance is on, a write (but signing in or out and the switch
    itself) is a 503 with the operator's message and `Retry-After`; every request goes on to `then`."""

    async def before_request(request: Request[Any, Any, State]) -> None:
        state = await switch.current()
        if state is not None:
            request.scope.setdefault("state", {})[MAINTENANCE_STATE] = state
            if request.method not in _READS and request.url.path not in OPEN_WRITES:
                raise UnderMaintenance(state)
        await then(request)

    return before_request


def maintenance_notice(request: Request[Any, Any, State]) -> str | None:
    """The banner's text on a page, while maintenance is on."""
    state = request.scope.get("state", {}).get(MAINTENANCE_STATE)
    return state.message if state is not None else None


class MaintenanceController(Controller):
    """The platform operator's switch (the `super_admin` role only); each change is audited."""

    path = "/api/platform/maintenance"
    tags = ["platform"]
    guards = [requires_role()]

    @get(summary="Whether maintenance mode is on, and its message")
    async def status(self, maintenance: NamedDependency[MaintenanceSwitch]) -> MaintenanceStatus:
        return MaintenanceStatus.of(await maintenance.current())

    @put(status_code=HTTP_200_OK, summary="Turn maintenance mode on: writes answer 503, jobs pause")
    async def turn_on(
        self,
        data: JSONBody[MaintenanceInput],
        maintenance: NamedDependency[MaintenanceSwitch],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> MaintenanceStatus:
        return MaintenanceStatus.of(await switch_on(db_session, maintenance, actor, data))

    @delete(status_code=HTTP_200_OK, summary="Turn maintenance mode off")
    async def turn_off(
        self,
        maintenance: NamedDependency[MaintenanceSwitch],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> MaintenanceStatus:
        await switch_off(db_session, maintenance, actor)
        return MaintenanceStatus.of(None)
