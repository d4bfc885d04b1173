"""The Litestar SQLAlchemy plugin, with every request's session scoped to the authenticated caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from litestar.datastructures import State
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.tokens import Principal
from db.session import TENANT_INFO_KEY


@dataclass
class TenantScopedSQLAlchemyConfig(SQLAlchemyAsyncConfig):
    """Sessions start with the caller's tenant in `session.info`; `db.session` applies it per transaction.

    A request without an authenticated principal gets a session with no tenant, which sees no rows.
    """

    def provide_session(self, state: State, scope: Scope) -> AsyncSession:
        session = super().provide_session(state, scope)
        principal = scope.get("user")
        if isinstance(principal, Principal) and TENANT_INFO_KEY not in session.info:
            session.info[TENANT_INFO_KEY] = principal.tenant_id
        return session


def create_database_plugin(engine: AsyncEngine, session_maker: async_sessionmaker[AsyncSession]) -> SQLAlchemyPlugin:
    config = TenantScopedSQLAlchemyConfig(
        engine_instance=engine,
        session_maker=session_maker,
        before_send_handler="autocommit",
    )
    return SQLAlchemyPlugin(config=config)
