"""Usage rows of every kind the gateway writes (refused, failed, failed over, served) naming real channels, a key."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.rollups import insert_with_rollups
from db.provider import UsageLog
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key, token_id_of
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


class Made:
    """The channels and key a test's usage rows name."""

    def __init__(self, primary: UUID, backup: UUID, key: UUID) -> None:
        self.primary, self.backup, self.key = primary, backup, key


async def channels_and_key(
    client: Client, upstream: MockUpstream, tenant: TenantRows, auth_headers: AuthHeaders
) -> Made:
    admin = auth_headers(tenant.admin)
    primary = await add_channel(client, admin, upstream, "primary")
    backup = await add_channel(client, admin, upstream, "backup")
    _, token = await issue_key(client, admin, name="billing app")
    return Made(UUID(primary["id"]), UUID(backup["id"]), token_id_of(token))


def attempt(channel_id: UUID, name: str, status: int, latency_ms: int, error: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"channel_id": str(channel_id), "channel": name, "status": status, "latency_ms": latency_ms}
    return found | ({"error": error} if error else {})


def one_of_each(tenant: TenantRows, made: Made) -> list[UsageLog]:
    """A row of each kind the gateway writes: four refusals, two failures, a failed-over success, a plain one."""

    def row(status: int, outcome: str, details: dict[str, Any], **fields: Any) -> UsageLog:
        return UsageLog(
            user_id=tenant.admin.id,
            token_id=made.key,
            endpoint="chat",
            model="gpt-test",
            status_code=status,
            outcome=outcome,
            details=details,
            **fields,
        )

    return [
        row(401, "refused", {"error": "This API key is disabled.", "reason": "key_disabled"}),
        row(403, "refused", {"error": "This key may not use gpt-test.", "reason": "model_not_allowed"}),
        row(
            429,
            "refused",
            {"error": "The group's budget is used up.", "reason": "budget", "scope": "group", "scope_name": "Research"},
        ),
        row(503, "refused", {"error": "No channel serves gpt-test.", "reason": "no_channel"}),
        row(
            502,
            "upstream_error",
            {
                "error": "Every channel failed.",
                "reason": "upstream_error",
                "attempts": [
                    attempt(made.primary, "primary", 502, 1234, "bad gateway from primary"),
                    attempt(made.backup, "backup", 500, 87, "internal error from backup"),
                ],
            },
        ),
        row(
            504,
            "upstream_error",
            {"error": "The provider timed out.", "attempts": [attempt(made.backup, "b", 504, 30000)]},
        ),
        row(
            200,
            "ok",
            {
                "attempts": [
                    attempt(made.primary, "primary", 502, 40, "overloaded"),
                    attempt(made.backup, "backup", 200, 90),
                ]
            },
            channel_id=made.backup,
            cost=1_230_000,
            prompt_tokens=10,
            completion_tokens=5,
        ),
        row(200, "ok", {}, channel_id=made.primary, cost=10),
    ]


# The flusher's own statement, its INSERT replaced by the rows a test has just added.
_ROLL_UP = text(insert_with_rollups("SELECT * FROM provider_usage_logs WHERE id = ANY(:ids)", "count(*)")).bindparams(
    bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True)))
)


async def add_usage(session: AsyncSession, rows: list[UsageLog]) -> None:
    """Add calls to the log as the flusher writes them: with their hourly and daily sums (not committed)."""
    session.add_all(rows)
    await session.flush()
    await session.execute(_ROLL_UP, {"ids": [row.id for row in rows]})


async def store(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, rows: list[UsageLog]) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        await add_usage(session, rows)
        await session.commit()
