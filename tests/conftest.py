"""Session-wide real PostgreSQL and Redis, the schema built by the real migrations, one app, tenants and clients.

PostgreSQL and Redis are the embedded servers (as `make run` uses) unless TEST_DATABASE_URL (a
superuser URL: the suite creates its own database and roles) or TEST_REDIS_URL (a disposable Redis)
are set. Tests talk to PostgreSQL as the app role, the one the service uses, so RLS is always on.
Each test process builds the app once; every test gets its own client, an emptied Redis, and the
tenant rows it wrote deleted when it ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
from asgi_lifespan import LifespanManager
from litestar import Litestar
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.engine import create_gateway
from app.jobs.registry import WorkerServices
from app.main import create_app
from app.settings import Settings, new_key_entry
from app.storage import create_object_store
from db.bootstrap import DatabaseUrls, bootstrap_database, drop_database, plain_url
from db.migrations import upgrade_to_head
from db.session import create_engine, create_session_maker
from tests.support.clients import AuthHeaders, Client, access_headers, client_of
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.database import delete_tenant_rows
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows, create_tenant_rows
from tests.support.usage_writer import usage_writer


@pytest.fixture(scope="session")
def postgres_superuser_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "pgdata")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
async def database(postgres_superuser_url: str) -> AsyncIterator[DatabaseUrls]:
    name = f"lyss_test_{os.getpid()}"
    await drop_database(postgres_superuser_url, name)
    urls = await bootstrap_database(postgres_superuser_url, name)
    await upgrade_to_head(urls.owner_url)
    yield urls
    await drop_database(postgres_superuser_url, name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
async def app_engine(database: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database.app_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def owner_engine(database: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database.owner_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def superuser_connection(postgres_superuser_url: str, database: DatabaseUrls) -> AsyncIterator[Any]:
    """For the clean-up between tests only: a superuser sees, and so deletes, every tenant's rows."""
    connection = await asyncpg.connect(plain_url(postgres_superuser_url, make_url(database.app_url).database or ""))
    yield connection
    await connection.close()


@pytest.fixture
async def clean_database(superuser_connection: Any) -> AsyncIterator[None]:
    """Per-test isolation: whatever a test wrote is deleted when it ends."""
    yield
    await delete_tenant_rows(superuser_connection)


@pytest.fixture
def session_maker(app_engine: AsyncEngine, clean_database: None) -> async_sessionmaker[AsyncSession]:
    """Sessions as the app role, the one the service uses: RLS applies to everything they do."""
    return create_session_maker(app_engine)


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[None]:
    """Per-test isolation for Redis (rate-limit counters, revoked sessions, OAuth states)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield
    client.close()


@pytest.fixture(scope="session")
def usage_flusher(database: DatabaseUrls, redis_url: str) -> Iterator[None]:
    """What a deployment's `lyss worker` does for usage, for this test process: API processes (the shared app,
    `lyss serve`) only queue usage records in Redis; this writes them to the usage log."""
    with usage_writer(database.app_url, redis_url):
        yield


@pytest.fixture(scope="session")
def session_settings(
    database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory, usage_flusher: None
) -> Settings:
    """The settings of this test process's app, and of the workers and commands its tests start."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("lyss") / "data",
        database_url=database.app_url,
        database_owner_url=database.owner_url,
        redis_url=redis_url,
        encryption_keys=new_key_entry(),
        jwt_keys=new_key_entry(),
        database_pool_size=2,
        public_url="http://lyss.test",
        login_max_failures=3,
        login_lockout_seconds=2,
        login_ip_limit_per_minute=1000,
        echo_provider=True,
        gateway_cache_seconds=0.0,
        upstream_read_timeout_seconds=2.0,
        channel_cooldown_seconds=2,
        job_modules="tests.support.job_handlers",
        job_retry_delay_seconds=0.05,
        job_retry_max_delay_seconds=0.5,
        job_heartbeat_seconds=2,
        webhook_retry_seconds=0.05,
        job_sweep_seconds=1,
        chat_summary_every_messages=6,
        worker_shutdown_grace_seconds=0,
        embedded_worker=False,
    )


@pytest.fixture
def settings(session_settings: Settings, clean_database: None, clean_redis: None) -> Settings:
    """The app's settings, for a test that starts a worker, a command or an app of its own, on a clean slate."""
    return session_settings


@pytest.fixture(scope="session")
async def app(session_settings: Settings) -> AsyncIterator[Litestar]:
    """One app per test process, started once: building one (routes, lifespan) costs more than most tests."""
    application = create_app(session_settings)
    asgi: Any = application  # Litestar's precise scope types do not match asgi-lifespan's
    async with LifespanManager(asgi):
        yield application


@pytest.fixture
async def tenant_a(session_maker: async_sessionmaker[AsyncSession], settings: Settings) -> TenantRows:
    return await create_tenant_rows(
        session_maker, f"alpha-{secrets.token_hex(3)}", SecretBox(settings.encryption_keyring)
    )


@pytest.fixture
async def tenant_b(session_maker: async_sessionmaker[AsyncSession], settings: Settings) -> TenantRows:
    return await create_tenant_rows(
        session_maker, f"bravo-{secrets.token_hex(3)}", SecretBox(settings.encryption_keyring)
    )


@pytest.fixture
async def client(app: Litestar, clean_database: None, clean_redis: None) -> AsyncIterator[Client]:
    """A client of its own (cookies) on the shared app, with Redis emptied and the test's rows deleted after."""
    async with client_of(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[MockUpstream]:
    server = MockUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(_upstream_server: MockUpstream) -> MockUpstream:
    """The loopback mock provider, with this test's scripts and counters only."""
    _upstream_server.behaviors.clear()
    _upstream_server.calls.clear()
    _upstream_server.bodies.clear()
    _upstream_server.headers_seen.clear()
    _upstream_server.in_flight.clear()
    _upstream_server.most_in_flight.clear()
    _upstream_server.responses_calls.clear()
    return _upstream_server


@pytest.fixture
def auth_headers(settings: Settings) -> AuthHeaders:
    """Headers that make a request act as `user` (a real access token, signed with the test keys)."""
    return lambda user: access_headers(settings.jwt_keyring, user)


@pytest.fixture(scope="session")
def lyss(
    database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory, usage_flusher: None
) -> Iterator[RunningLyss]:
    """`lyss serve` for the tests of this process that need a real server, started once: each test's rows are
    its own tenants', deleted after it, and the server caches nothing (LYSS_GATEWAY_CACHE_SECONDS=0)."""
    with serve_lyss(database, redis_url, tmp_path_factory.mktemp("lyss")) as running:
        yield running


@pytest.fixture
async def worker_services(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[WorkerServices]:
    """What `lyss worker` gives a task (gateway, Redis, object store...), for calling tasks directly."""
    redis_client = AsyncRedis.from_url(settings.redis_url or "")
    http = aiohttp.ClientSession()
    secret_box = SecretBox(settings.encryption_keyring)
    gateway = create_gateway(settings, session_maker, redis_client, secret_box)
    yield WorkerServices(
        settings=settings,
        session_maker=session_maker,
        redis=redis_client,
        secret_box=secret_box,
        http=http,
        gateway=gateway,
        objects=create_object_store(settings),
    )
    await gateway.close()
    await http.close()
    await redis_client.aclose()
