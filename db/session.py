"""Engine and tenant-scoped sessions: the tenant is applied with `set_config(..., true)` in every transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, SessionTransaction

from db.base import TenantOwned

TENANT_INFO_KEY = "tenant_id"
_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant_id, true)")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "lyss"}},
    )


def create_session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@event.listens_for(Session, "after_begin")
def _apply_tenant(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    # `true` makes the setting transaction-local: a pooled connection never carries a tenant into the
    # next transaction, and a session that commits mid-request gets its tenant back here.
    tenant_id = session.info.get(TENANT_INFO_KEY)
    if tenant_id is not None:
        connection.execute(_SET_TENANT, {"tenant_id": str(tenant_id)})


@event.listens_for(Session, "before_flush")
def _fill_tenant_id(session: Session, flush_context: Any, instances: Any) -> None:
    tenant_id = session.info.get(TENANT_INFO_KEY)
    for instance in session.new:
        if isinstance(instance, TenantOwned) and getattr(instance, "tenant_id", None) is None:
            instance.tenant_id = tenant_id  # stays None without a tenant, and NOT NULL refuses the row


async def set_session_tenant(session: AsyncSession, tenant_id: UUID) -> None:
    """Scope `session` to `tenant_id` from now on, including a transaction already under way."""
    session.info[TENANT_INFO_KEY] = tenant_id
    if session.in_transaction():
        await session.execute(_SET_TENANT, {"tenant_id": str(tenant_id)})


@asynccontextmanager
async def tenant_session(
    session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID
) -> AsyncIterator[AsyncSession]:
    """A session that only ever sees `tenant_id`'s rows. The caller commits explicitly."""
    async with session_maker() as session:
        session.info[TENANT_INFO_KEY] = tenant_id
        yield session
