"""The dashboard's leaders: users ranked by calls, named by email, whoever no longer exists as a dash."""

from __future__ import annotations

import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.portal.services import dashboard
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.tenants import TenantRows
from tests.support.usage_rows import add_usage


async def test_top_users_are_ranked_by_calls_and_named_by_email(
    session_maker: async_sessionmaker[AsyncSession], tenant_a: TenantRows
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    gone = uuid7()  # a user deleted since their calls
    callers = [tenant_a.user.id] * 3 + [gone] * 2 + [tenant_a.admin.id] + [None]
    async with tenant_session(session_maker, tenant_a.id) as session:
        await add_usage(session, [
            UsageLog(endpoint="chat", model="m", user_id=caller, cost=10, prompt_tokens=2, completion_tokens=1,
                     created_at=now - datetime.timedelta(minutes=5))
            for caller in callers
        ])  # fmt: skip
        await session.commit()
    async with tenant_session(session_maker, tenant_a.id) as session:
        data = await dashboard(session, "24h", user_id=None, with_channels=False, now=now)
    leaders = [(leader.name, leader.requests, leader.tokens, leader.cost) for leader in data.top_users]
    assert leaders[:2] == [(tenant_a.user.email, 3, 9, 30), ("—", 2, 6, 20)]
    assert sorted(leaders[2:]) == sorted([(tenant_a.admin.email, 1, 3, 10), ("—", 1, 3, 10)])
    assert [(leader.name, leader.requests) for leader in data.top_models] == [("m", 7)]
