"""`lyss doctor`: what is configured, what is missing, and what is unsafe for production."""

from __future__ import annotations

import ipaddress
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.gateway.usage import HEARTBEAT_SECONDS, usage_writer_seen
from app.redis_client import close_redis, cluster_problem, create_redis, is_cluster_url, unreachable_nodes
from app.settings import Settings, database_url
from app.storage import StorageError, create_object_store
from db.session import create_engine

Level = Literal["ok", "warning", "unsafe"]


class Finding(msgspec.Struct, frozen=True):
    level: Level
    topic: str
    message: str


def review(settings: Settings) -> list[Finding]:
    """What the settings alone say."""
    found: list[Finding] = []

    def note(level: Level, topic: str, message: str) -> None:
        found.append(Finding(level, topic, message))

    if settings.embedded_database:
        note("warning", "database", "embedded PostgreSQL and Redis: fine on one machine, not for production")
    elif settings.database_owner_url is None:
        note("warning", "database", "DATABASE_OWNER_URL is unset: `lyss migrate` cannot run from here")
    else:
        note("ok", "database", "DATABASE_URL and DATABASE_OWNER_URL are set")
    if settings.public_url.startswith("https://"):
        note("ok", "tls", f"served as {settings.public_url}: session cookies are Secure")
    else:
        note("unsafe", "tls", f"LYSS_PUBLIC_URL is {settings.public_url}: no TLS in front, cookies are not Secure")
    if settings.log_level == "debug":
        note("unsafe", "logging", "LYSS_LOG_LEVEL=debug: request details are logged; use info")
    else:
        note("ok", "logging", f"{settings.log_format} logs at level {settings.log_level}")
    networks = [ipaddress.ip_network(item.strip()) for item in settings.trusted_proxies.split(",") if item.strip()]
    if any(network.prefixlen == 0 for network in networks):
        note("unsafe", "proxies", "LYSS_TRUSTED_PROXIES trusts every address: any client can forge its own IP")
    else:
        note("ok", "proxies", f"X-Forwarded-For believed from: {settings.trusted_proxies or 'nobody'}")
    if settings.echo_provider_enabled and not settings.embedded_database:
        note("warning", "gateway", "LYSS_ECHO_PROVIDER is on: tenants can add the local echo channel")
    for variable, raw in (("LYSS_ENCRYPTION_KEYS", settings.encryption_keys), ("LYSS_JWT_KEYS", settings.jwt_keys)):
        if not raw:
            note("unsafe", "keys", f"{variable} is unset")
        elif "CHANGE-ME" in raw:
            note("unsafe", "keys", f"{variable} still holds the example placeholder")
        else:
            note("ok", "keys", f"{variable}: {raw.count(',') + 1} key(s), the first is current")
    if settings.storage_backend == "s3" and not settings.s3_bucket:
        note("unsafe", "storage", "LYSS_STORAGE_BACKEND=s3 without LYSS_S3_BUCKET")
    elif settings.storage_backend == "local" and not settings.embedded_database:
        note("warning", "storage", f"local object storage in {settings.storage_path}: every replica must share it")
    note("ok", "cors", "no cross-origin access is allowed (the portal and API are same-origin only)")
    return found


async def probe(settings: Settings) -> list[Finding]:
    """What the services themselves answer: reachability, and whether the app role really is held by RLS."""
    found: list[Finding] = []
    if settings.database_url is not None:
        engine = create_engine(
            database_url(settings.database_url, "DATABASE_URL").render_as_string(hide_password=False), pool_size=1
        )
        try:
            async with engine.connect() as connection:
                row = (
                    await connection.execute(
                        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
                    )
                ).one()
            if row.rolsuper or row.rolbypassrls:
                found.append(
                    Finding(
                        "unsafe",
                        "database",
                        "DATABASE_URL's role bypasses row-level security (superuser or BYPASSRLS): "
                        "tenants are not isolated; use the lyss_app role",
                    )
                )
            else:
                found.append(Finding("ok", "database", "PostgreSQL reachable; the app role is subject to RLS"))
        except (DBAPIError, SQLAlchemyError, OSError) as error:
            found.append(Finding("unsafe", "database", f"PostgreSQL unreachable: {type(error).__name__}"))
        finally:
            await engine.dispose()
    if settings.redis_url is not None:
        found += await _probe_redis(settings.redis_url)
    try:
        await create_object_store(settings).check()
        found.append(Finding("ok", "storage", f"{settings.storage_backend} object storage writable"))
    except StorageError as error:
        found.append(Finding("unsafe", "storage", error.detail))
    return found


async def _probe_redis(url: str) -> list[Finding]:
    """Redis (or the Redis Cluster) reachable, and whether a worker writes the usage log through it."""
    if is_cluster_url(url):
        reached = await _probe_cluster(url)
        if reached.level == "unsafe":
            return [reached]
        found = [reached]
        client = create_redis(url, max_connections=2, wait_seconds=3)
    else:
        found = []
        client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        if not found:
            await client.ping()
            found.append(Finding("ok", "redis", "Redis reachable"))
        if await usage_writer_seen(client):
            found.append(Finding("ok", "usage", "a lyss worker writes the usage log"))
        else:
            found.append(
                Finding(
                    "warning",
                    "usage",
                    f"usage is not being written: no lyss worker seen in the last {HEARTBEAT_SECONDS} s "
                    "(calls wait in Redis until one runs)",
                )
            )
    except (RedisError, OSError) as error:
        found.append(Finding("unsafe", "redis", f"Redis unreachable: {type(error).__name__}"))
    finally:
        await close_redis(client)
    return found


async def _probe_cluster(url: str) -> Finding:
    """The same check `lyss serve` and `lyss worker` make before they start, and which seed nodes are down."""
    if problem := await cluster_problem(url):
        return Finding("unsafe", "redis", f"Redis Cluster: {problem}")
    if down := await unreachable_nodes(url):
        # The cluster serves every slot without them (a replica took over), but they are named in REDIS_URL.
        return Finding(
            "warning", "redis", f"Redis Cluster serves every slot, but these nodes do not answer: {', '.join(down)}"
        )
    return Finding("ok", "redis", "Redis Cluster reachable; every slot is served")
