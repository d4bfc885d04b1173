"""The platform operator in tests: an account with the role super_admin."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.auth import User
from db.session import tenant_session
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows


async def super_admin_of(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> User:
    """A platform operator: an account of `tenant` (signing in with TEST_PASSWORD) with the role super_admin."""
    async with tenant_session(session_maker, tenant.id) as session:
        user = User(email=f"operator@{tenant.slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="super_admin")
        session.add(user)
        await session.commit()
    return user
