"""Session-wide real PostgreSQL and Redis, the schema built by the real migrations, tenants and clients.

PostgreSQL and Redis are the embedded servers (as `make run` uses) unless TEST_DATABASE_URL (a
superuser URL: the suite creates its own database and roles) or TEST_REDIS_URL (a disposable Redis)
are set. Tests talk to PostgreSQL as the app role, the one the service uses, so RLS is always on.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest
import redis
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox, secret_context
from app.main import create_app
from app.settings import Settings, new_key_entry
from db.auth import OAuthProvider, User
from db.bootstrap import DatabaseUrls, bootstrap_database, drop_database
from db.chat import Conversation
from db.memory import Memory
from db.migrations import upgrade_to_head
from db.models import Base
from db.session import create_engine, create_session_maker, tenant_session
from db.tenant import Job, Organization, UserGroup
from tests.mock_upstream import MockUpstream

Client = httpx.AsyncClient
TEST_PASSWORD = "correct horse battery staple"
# One real argon2id hash, computed once: hashing per fixture user would cost ~50 ms each.
TEST_PASSWORD_HASH = PasswordHasher().hash(TEST_PASSWORD)


class TenantRows(msgspec.Struct, frozen=True):
    """A tenant with the rows other rows hang from: an admin, an end user, a group, an OAuth provider."""

    id: UUID
    slug: str
    admin: User
    user: User
    group: UserGroup
    oauth_provider: OAuthProvider
    job: Job
    conversation: Conversation
    memory: Memory
    related_memory: Memory


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


@pytest.fixture
async def clean_database(owner_engine: AsyncEngine) -> AsyncIterator[None]:
    """Per-test isolation: whatever a test wrote is TRUNCATEd (as the owner) when it ends."""
    yield
    # Tenant data only: platform tables (provider_types) hold the migrations' seed rows.
    tables = ", ".join(
        table.name
        for table in Base.metadata.sorted_tables
        if "tenant_id" in table.c or table.name == "tenant_organizations"
    )
    async with owner_engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} CASCADE"))


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


@pytest.fixture
def settings(
    database: DatabaseUrls, redis_url: str, tmp_path: Path, clean_database: None, clean_redis: None
) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
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
        job_modules="tests.job_handlers",
        job_retry_delay_seconds=0.05,
        job_retry_max_delay_seconds=0.5,
        job_heartbeat_seconds=2,
        job_sweep_seconds=1,
        chat_summary_every_messages=6,
        worker_shutdown_grace_seconds=0,
        embedded_worker=False,
    )


async def create_tenant_rows(
    session_maker: async_sessionmaker[AsyncSession], slug: str, secret_box: SecretBox
) -> TenantRows:
    tenant_id = uuid7()
    async with tenant_session(session_maker, tenant_id) as session:
        session.add(Organization(id=tenant_id, slug=slug, name=slug.title()))
        await session.flush()  # no relationship() tells the unit of work that users depend on it
        admin = User(email=f"admin@{slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="tenant_admin")
        user = User(email=f"user@{slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="end_user")
        session.add_all([admin, user])
        await session.flush()
        group = UserGroup(name="engineering", created_by=admin.id)
        provider = OAuthProvider(
            provider_name="github",
            kind="github",
            client_id=f"{slug}-client",
            encrypted_client_secret=secret_box.encrypt(
                "fixture-client-secret",
                context=secret_context("auth_oauth_providers", "encrypted_client_secret", tenant_id),
            ),
            redirect_uri=f"https://{slug}.example.com/callback",
        )
        job = Job(kind="fixture.finished", status="succeeded", progress=100)
        conversation = Conversation(user_id=user.id, title="Fixture", model="fixture-model")
        memory = Memory(user_id=admin.id, memory_text="Likes tea", memory_hash=secrets.token_hex(32))
        related_memory = Memory(user_id=admin.id, memory_text="Likes green tea", memory_hash=secrets.token_hex(32))
        session.add_all([group, provider, job, conversation, memory, related_memory])
        await session.commit()
    return TenantRows(
        id=tenant_id,
        slug=slug,
        admin=admin,
        user=user,
        group=group,
        oauth_provider=provider,
        job=job,
        conversation=conversation,
        memory=memory,
        related_memory=related_memory,
    )


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


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[Client]:
    """The app in this event loop, lifespan included (its background tasks share the loop with requests)."""
    app: Any = create_app(settings)  # an ASGI app; Litestar's precise scope types do not match httpx's alias
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as test_client,
    ):
        yield test_client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with app_client(settings) as test_client:
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
    return _upstream_server


@pytest.fixture
def auth_headers(settings: Settings) -> Callable[[User], dict[str, str]]:
    """Headers that make a request act as `user` (a real access token, signed with the test keys)."""

    def headers_for(user: User) -> dict[str, str]:
        principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
        token = issue_access_token(settings.jwt_keyring, principal, ttl_seconds=300)
        return {"Authorization": f"Bearer {token}"}

    return headers_for


LYSS = str(Path(sys.executable).parent / "lyss")
# The child imports `app` from this checkout, not from wherever the virtualenv's editable install points.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class RunningLyss(msgspec.Struct):
    url: str
    settings: Settings
    log: Path

    def headers_for(self, user: User) -> dict[str, str]:
        principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
        return {"Authorization": f"Bearer {issue_access_token(self.settings.jwt_keyring, principal, 300)}"}


@contextmanager
def serve_lyss(
    database: DatabaseUrls, redis_url: str, log_dir: Path, **environment_overrides: str
) -> Iterator[RunningLyss]:
    """`lyss serve` on a free loopback port until the block ends; its output goes to `log_dir/server.log`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        database_url=database.app_url,
        redis_url=redis_url,
        encryption_keys=new_key_entry(),
        jwt_keys=new_key_entry(),
        port=port,
    )
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "DATABASE_URL": database.app_url,
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": settings.encryption_keys or "",
        "LYSS_JWT_KEYS": settings.jwt_keys or "",
        "LYSS_PORT": str(port),
        "LYSS_ECHO_PROVIDER": "true",
        "LYSS_GATEWAY_CACHE_SECONDS": "0",
        "LYSS_UPSTREAM_READ_TIMEOUT": "5",
        "LYSS_LOG_LEVEL": "warning",
        "DATABASE_POOL_SIZE": "10",
        **environment_overrides,
    }
    log_path = log_dir / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [LYSS, "serve", "--no-migrate", "--no-demo"], env=environment, start_new_session=True,
        stdout=log, stderr=log, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"lyss serve exited; see {log_path}")
            if time.monotonic() > deadline:
                raise AssertionError(f"lyss serve was not ready within 60 s; see {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield RunningLyss(url=url, settings=settings, log=log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def lyss(database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLyss]:
    with serve_lyss(database, redis_url, tmp_path_factory.mktemp("lyss")) as running:
        yield running
