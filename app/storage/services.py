"""Files that jobs leave behind, handed to the people allowed to see the job, through short-lived links."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.services import ADMIN_ROLES
from app.auth.tokens import Principal
from app.errors import Conflict, NotFound
from app.jobs.services import visible_job
from app.storage.base import ObjectStore
from app.tenants.services import Actor, audit_change


async def job_file_url(
    session: AsyncSession,
    store: ObjectStore,
    principal: Principal,
    job_id: UUID,
    *,
    kind: str,
    name: str,
    filename: str,
    actor: Actor,
) -> str:
    """A download link for the file job `job_id` (of `kind`) stored as `name`: for whoever may see the job
    (its starter, or the tenant's admins), once it has succeeded. The download is audited."""
    job = await visible_job(session, job_id, user_id=principal.user_id, is_admin=principal.role in ADMIN_ROLES)
    if job.kind != kind:
        raise NotFound("No such export.")
    if job.status != "succeeded":
        raise Conflict(f"This export is {job.status}; download it once it has succeeded.")
    if not await store.exists(job.tenant_id, name):
        raise NotFound("This export has expired; start a new one.")
    audit_change(session, actor, f"{kind}_downloaded", "job", job.id)
    return await store.download_url(job.tenant_id, name, filename=filename)
