"""The composition root: everything a Lyss process shares, built from `Settings` in this one place."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.encryption import SecretBox
from app.gateway.engine import Gateway, create_gateway
from app.jobs.services import create_queue
from app.observability.maintenance import MaintenanceSwitch
from app.redis_client import close_redis, create_redis
from app.settings import ConfigurationError, Settings, database_url
from app.storage import create_object_store
from app.storage.base import ObjectStore
from db.session import create_engine, create_session_maker

# Under a burst a call waits this long for a free Redis connection instead of failing at once.
REDIS_WAIT_SECONDS = 10
REDIS_MAX_CONNECTIONS = 200


@dataclass(frozen=True)
class Resources:
    """The engine and sessions, Redis, the secret box, the gateway, the object store, the job queue and the
    maintenance switch.

    The API (`create_app`), the job worker (`create_worker`) and the CLI build them with `build` and
    release them with `close`; nothing else constructs these. Building connects to nothing: connections
    are opened on first use.
    """

    settings: Settings
    engine: AsyncEngine
    session_maker: async_sessionmaker[AsyncSession]
    redis: Redis
    secret_box: SecretBox
    gateway: Gateway
    object_store: ObjectStore
    job_queue: RedisQueue
    maintenance: MaintenanceSwitch

    @classmethod
    def build(cls, settings: Settings, *, pool_size: int | None = None) -> Resources:
        """For resolved settings (a concrete DATABASE_URL and REDIS_URL); `pool_size` overrides the setting."""
        if settings.database_url is None or settings.redis_url is None:
            raise ConfigurationError(
                "Lyss needs DATABASE_URL and REDIS_URL here; `lyss serve` and `lyss worker` start embedded ones"
            )
        engine = create_engine(
            database_url(settings.database_url, "DATABASE_URL").render_as_string(hide_password=False),
            pool_size=pool_size or settings.database_pool_size,
        )
        session_maker = create_session_maker(engine)
        redis = create_redis(settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS, wait_seconds=REDIS_WAIT_SECONDS)
        secret_box = SecretBox(settings.encryption_keyring)
        return cls(
            settings=settings,
            engine=engine,
            session_maker=session_maker,
            redis=redis,
            secret_box=secret_box,
            gateway=create_gateway(settings, session_maker, redis, secret_box),
            object_store=create_object_store(settings),
            job_queue=create_queue(redis),
            maintenance=MaintenanceSwitch(redis),
        )

    async def close(self) -> None:
        await self.gateway.close()
        await close_redis(self.redis)
        await self.engine.dispose()
