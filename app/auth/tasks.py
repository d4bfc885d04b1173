"""Scheduled clean-up for the auth domain: sessions and invitations that can no longer be used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func

from app.jobs.registry import WorkerServices, scheduled
from app.tenants.services import all_tenant_ids
from db.auth import Invitation, UserSession
from db.session import tenant_session


@scheduled("auth.cleanup", cron="17 * * * *")
async def remove_expired(services: WorkerServices) -> dict[str, Any]:
    """Delete sessions whose access and refresh lifetimes have both ended, and lapsed unaccepted invitations.

    A revoked session stays until then: a replayed refresh token of its family must still be recognised.
    """
    sessions = invitations = 0
    async with services.session_maker() as session:
        tenant_ids = await all_tenant_ids(session)
    for tenant_id in tenant_ids:
        async with tenant_session(services.session_maker, tenant_id) as session:
            removed = await session.execute(
                delete(UserSession).where(
                    UserSession.expires_at < func.now(), UserSession.refresh_expires_at < func.now()
                )
            )
            sessions += removed.rowcount  # type: ignore[attr-defined]
            removed = await session.execute(
                delete(Invitation).where(Invitation.expires_at < func.now(), Invitation.accepted_at.is_(None))
            )
            invitations += removed.rowcount  # type: ignore[attr-defined]
            await session.commit()
    return {"sessions": sessions, "invitations": invitations}
