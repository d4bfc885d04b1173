"""The `lyss` command: serve, migrate, and provision tenants and their admins."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.password_resets import IssuedPasswordReset, issue_password_reset_by_email
from app.backup import BackupError
from app.backup import backup as backup_database
from app.backup import restore as restore_database
from app.embedded import EmbeddedServerError, embedded_services, ensure_secrets_file
from app.encryption import reencrypt_secrets
from app.errors import ServiceError
from app.gateway.admin import add_demo_gateway
from app.jobs.worker import create_worker
from app.observability.doctor import Finding, probe, review
from app.observability.logging import configure_logging, get_logger, logging_dict_config, resolved_log_format
from app.observability.maintenance import (
    DEFAULT_RETRY_AFTER,
    GATEWAY_MODES,
    MAX_RETRY_AFTER,
    Maintenance,
    check_message,
    describe_maintenance,
)
from app.operations.smoke import Credentials, passed, run_smoke
from app.redis_client import cluster_problem, is_cluster_url
from app.resources import Resources
from app.settings import (
    ConfigurationError,
    Settings,
    database_url,
    load_settings,
    settings_environment,
    unknown_variables,
)
from app.storage import StorageError, create_object_store
from app.tenants import archive as tenant_archive
from app.tenants.platform import (
    PlatformTenants,
    TenantFilter,
    TenantOverview,
    tenant_by_slug,
    tenant_description,
    tenant_overview,
    tenant_table,
)
from app.tenants.services import (
    DemoLogin,
    ProvisioningError,
    create_tenant,
    create_user,
    provision_demo_tenant,
    set_tenant_quota,
)
from db.migrations import drop_expired_usage_partitions, upgrade_to_head
from db.session import create_engine

logger = get_logger("lyss.cli")

T = TypeVar("T")
API_WORKER_SHUTDOWN_SECONDS = 30

_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OperationalError,
    InterfaceError,
)


class DependencyUnavailable(Exception):
    """PostgreSQL or Redis cannot be reached; the message names the setting that points at it."""


def _fail(message: str) -> NoReturn:
    click.echo(f"lyss: {message}", err=True)
    sys.exit(1)


class _LyssGroup(click.Group):
    """Turns the errors a user can fix into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (
            ConfigurationError,
            ProvisioningError,
            EmbeddedServerError,
            DependencyUnavailable,
            BackupError,
            tenant_archive.ArchiveError,
            ServiceError,
        ) as error:
            _fail(str(error))
        except StorageError as error:
            _fail(error.detail)


def _settings() -> Settings:
    settings = load_settings()
    if settings.embedded_database and ensure_secrets_file(settings.data_dir):
        settings = load_settings()  # pick up the keys generated just now
    # Decided here, for the whole run: workers get the resolved format and may not see the terminal.
    log_format = resolved_log_format(settings.log_format, embedded=settings.embedded_database)
    settings = msgspec.structs.replace(settings, log_format=log_format)
    configure_logging(settings.log_level, settings.log_format)
    for problem in unknown_variables():
        logger.warning("unknown setting", problem=problem)
    return settings


def _describe_postgres(url: str, variable: str) -> str:
    parsed = make_url(url)
    where = parsed.host or parsed.query.get("host") or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"PostgreSQL at {where}{port}/{parsed.database} ({variable})"


def _reason(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    return str(getattr(cause, "__cause__", None) or cause).strip().splitlines()[0] or type(cause).__name__


async def _checked(engine: AsyncEngine, what: str, work: Callable[[], Awaitable[T]]) -> T:
    """`work()` once `engine` answers; a connection failure becomes one clear message naming `what`."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return await work()
    except _CONNECTION_ERRORS as error:
        raise DependencyUnavailable(f"cannot connect to {what}: {_reason(error)}") from None
    except DBAPIError as error:
        if error.connection_invalidated:
            raise DependencyUnavailable(f"lost the connection to {what}") from None
        raise


async def _with_resources(settings: Settings, work: Callable[[Resources], Awaitable[T]]) -> T:
    """`work(resources)` with what the API and the worker build from the same settings, then released."""
    resources = Resources.build(settings, pool_size=2)
    try:
        where = _describe_postgres(_app_url(settings), "DATABASE_URL")
        return await _checked(resources.engine, where, lambda: work(resources))
    finally:
        await resources.close()


async def _check_redis(url: str) -> None:
    if is_cluster_url(url):
        if problem := await cluster_problem(url):
            raise DependencyUnavailable(f"cannot run on the Redis Cluster (REDIS_URL): {problem}")
        return
    client = Redis.from_url(url, socket_connect_timeout=5)
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        raise DependencyUnavailable(f"cannot connect to Redis (REDIS_URL): {error}") from None
    finally:
        await client.aclose()


def _app_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return database_url(settings.database_url, "DATABASE_URL").render_as_string(hide_password=False)


def _owner_url(settings: Settings) -> str:
    if settings.database_owner_url is None:
        raise ConfigurationError(
            "DATABASE_OWNER_URL is required to migrate: the owner role's URL (the app role may not change the schema)"
        )
    return database_url(settings.database_owner_url, "DATABASE_OWNER_URL").render_as_string(hide_password=False)


async def _migrate(settings: Settings) -> None:
    # As the owner role, the one that may change the schema: not the app role the Resources connect as.
    url = _owner_url(settings)
    engine = create_engine(url, pool_size=1)
    try:
        await _checked(engine, _describe_postgres(url, "DATABASE_OWNER_URL"), lambda: upgrade_to_head(url))
        dropped = await drop_expired_usage_partitions(url, settings.usage_retention_months)
        if dropped:
            click.echo(f"dropped usage log partitions past LYSS_USAGE_RETENTION_MONTHS: {', '.join(dropped)}")
    finally:
        await engine.dispose()


@click.group(cls=_LyssGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Lyss: a self-hosted multi-tenant AI platform.

    Without DATABASE_URL and REDIS_URL, Lyss runs embedded PostgreSQL and Redis with their data
    under LYSS_DATA_DIR (default .data). See README.md for every setting.
    """


@main.command()
@click.option(
    "--migrate/--no-migrate",
    "apply_migrations",
    default=None,
    help="Apply database migrations before serving (default: only with the embedded database).",
)
@click.option(
    "--demo/--no-demo",
    default=None,
    help="On first start, create a 'demo' tenant and admin and print the login once (default: embedded only).",
)
def serve(apply_migrations: bool | None, demo: bool | None) -> None:
    """Serve the API with granian on LYSS_HOST:LYSS_PORT until Ctrl-C."""
    settings = _settings()
    embedded = settings.embedded_database
    # Decided now, while "embedded" still means something: workers see a concrete DATABASE_URL.
    settings = msgspec.structs.replace(
        settings, echo_provider=settings.echo_provider_enabled, embedded_worker=settings.embedded_worker_enabled
    )
    with embedded_services(settings, own_adopted=True) as resolved:
        asyncio.run(
            _prepare(
                resolved,
                migrate=embedded if apply_migrations is None else apply_migrations,
                demo=embedded if demo is None else demo,
            )
        )
        worker = _start_embedded_worker(resolved) if resolved.embedded_worker_enabled else None
        try:
            _run_granian(resolved)
        finally:
            if worker is not None:
                _stop_embedded_worker(worker, resolved)


async def _prepare(settings: Settings, *, migrate: bool, demo: bool) -> None:
    """Everything that must hold before workers start: the schema, Redis, PostgreSQL as the app role."""
    if migrate:
        await _migrate(settings)
    assert settings.redis_url is not None
    await _check_redis(settings.redis_url)

    async def first_start(resources: Resources) -> DemoLogin | None:
        async def add_gateway(session: Any, tenant_id: Any, admin: Any) -> str | None:
            if not settings.echo_provider_enabled:
                return None
            return await add_demo_gateway(session, tenant_id, admin, resources.secret_box)

        return await provision_demo_tenant(resources.session_maker, add_gateway) if demo else None

    # Last, so that nothing can fail between creating the demo login and printing it.
    login = await _with_resources(settings, first_start)
    if login is not None:
        click.echo(
            f"\n  First start: created the demo tenant. Sign in at {_local_url(settings)}/portal with this login,"
            " shown only once:\n"
            f"    tenant   {login.tenant_slug}\n    email    {login.email}\n    password {login.password}\n"
        )
        if login.extra:
            click.echo(_first_call_snippet(settings, login.extra))


def _local_url(settings: Settings) -> str:
    """Where a browser on this machine reaches the service (LYSS_HOST may be a wildcard, not an address)."""
    host = settings.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{settings.port}"  # a name
    if address.is_unspecified:
        return f"http://127.0.0.1:{settings.port}"
    return f"http://[{host}]:{settings.port}" if address.version == 6 else f"http://{host}:{settings.port}"


def _first_call_snippet(settings: Settings, api_key: str) -> str:
    base = _local_url(settings)
    body = '{"model": "echo", "messages": [{"role": "user", "content": "Hello"}]}'
    return (
        f"  Your API key (shown only once): {api_key}\n"
        "  Try the gateway now; the built-in 'echo' model answers without any provider key:\n\n"
        f"    curl {base}/v1/chat/completions -H 'Authorization: Bearer {api_key}' \\\n"
        f"      -H 'Content-Type: application/json' -d '{body}'\n\n"
        f'    python -c \'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="{api_key}"); '
        'print(c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "Hello"}])'
        ".choices[0].message.content)'\n"
    )


def _start_embedded_worker(settings: Settings) -> subprocess.Popen[bytes]:
    # A process of its own rather than a thread here: granian forks its workers from this process, and a
    # fork taken while another thread holds a lock (logging, the event loop) can hang the child.
    click.echo(f"Lyss job worker started ({settings.worker_concurrency} concurrent jobs)")
    # Started with Ctrl-C ignored, which a Python child keeps until it sets its own handlers: a Ctrl-C while it
    # imports would otherwise end it with a traceback. This process stops it (SIGTERM) as it stops itself.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env={**os.environ, **settings_environment(settings), "LYSS_EMBEDDED_WORKER": "false"},
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_embedded_worker(worker: subprocess.Popen[bytes], settings: Settings) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # finishes or re-queues what it runs, then exits
    try:
        worker.wait(timeout=settings.worker_shutdown_grace_seconds + 10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _run_granian(settings: Settings) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    # Loaded here, before granian forks its workers: a worker then reaches `app_factory` (which notes a Ctrl-C
    # for granian, see app.asgi) at once rather than after seconds of imports during which one is lost.
    import app.asgi  # noqa: F401

    # Workers are separate processes that read their settings from the environment: hand them the
    # resolved URLs and keys (the embedded servers belong to this process).
    os.environ.update(settings_environment(settings))
    click.echo(
        f"Lyss is serving on {_local_url(settings)}, the portal at {_local_url(settings)}/portal (Ctrl-C to stop)"
    )
    Server(
        "app.asgi:app_factory",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_dictconfig=logging_dict_config(settings.log_level, settings.log_format),
        # Ctrl-C must end the service even if a worker's shutdown hangs (a stuck client, a dead socket).
        workers_kill_timeout=API_WORKER_SHUTDOWN_SECONDS,
    ).serve()


@main.command()
def worker() -> None:
    """Run background jobs and scheduled maintenance until Ctrl-C or SIGTERM.

    On a stop request, running jobs get LYSS_WORKER_SHUTDOWN_GRACE_SECONDS to finish; the rest are
    put back in the queue and run again on another worker.
    """
    settings = _settings()
    with embedded_services(settings) as resolved:
        asyncio.run(_run_worker(resolved))


async def _run_worker(settings: Settings) -> None:
    assert settings.redis_url is not None
    await _check_redis(settings.redis_url)

    async def reachable(_: Resources) -> None:
        return None

    await _with_resources(settings, reachable)
    job_worker = create_worker(settings)
    click.echo(f"Lyss worker: up to {settings.worker_concurrency} jobs at once (Ctrl-C to stop)")
    await job_worker.start()


@main.command()
@click.option(
    "--database-url",
    envvar="LYSS_BACKUP_DATABASE_URL",
    required=True,
    help="A role that bypasses row-level security (superuser, or BYPASSRLS with pg_read_all_data) "
    "[env LYSS_BACKUP_DATABASE_URL].",
)
def backup(database_url: str) -> None:
    """Dump the whole database (pg_dump custom format) into the object store; print the archive's name."""
    settings = _settings()
    archive = asyncio.run(backup_database(create_object_store(settings), database_url))
    click.echo(archive.name)


@main.command()
@click.argument("archive")
@click.option("--database-url", required=True, help="A superuser URL of the new, empty database to restore into.")
def restore(archive: str, database_url: str) -> None:
    """Restore ARCHIVE (a name `lyss backup` printed, or a file) into an empty database, all or nothing."""
    settings = _settings()
    source: str | Path = Path(archive) if Path(archive).is_file() else archive
    asyncio.run(restore_database(create_object_store(settings), source, database_url))
    click.echo(f"Restored {archive}. Point DATABASE_URL and DATABASE_OWNER_URL at it and start Lyss.")


@main.command()
@click.argument("url")
@click.option("--tenant", "tenant_slug", help="The organization of the account to sign in with.")
@click.option("--email", help="The account's email (a tenant admin's or the operator's).")
@click.option("--password-stdin", is_flag=True, help="Read the account's password from the first line of stdin.")
@click.option("--api-key", help="An sk-... key for the gateway steps (chat stream, embedding).")
@click.option("--model", default="echo", show_default=True, help="The chat model of the streamed call.")
@click.option("--embedding-model", help="The model of the embedding call (default: --model).")
def smoke(
    url: str,
    tenant_slug: str | None,
    email: str | None,
    password_stdin: bool,
    api_key: str | None,
    model: str,
    embedding_model: str | None,
) -> None:
    """Check a running Lyss at URL after a deploy: one line per step, exit status 0 only if none failed.

    Without --api-key, the gateway steps use a key issued for the run (removed at the end), which needs
    --tenant, --email and --password-stdin.
    """
    credentials = None
    if tenant_slug or email or password_stdin:
        if not (tenant_slug and email and password_stdin):
            raise click.UsageError("--tenant, --email and --password-stdin go together")
        credentials = Credentials(tenant=tenant_slug, email=email, password=sys.stdin.readline().rstrip("\r\n"))
    elif not api_key:
        raise click.UsageError("give --tenant, --email and --password-stdin, or --api-key (or both)")
    results = asyncio.run(
        run_smoke(url, credentials=credentials, api_key=api_key, model=model, embedding_model=embedding_model)
    )
    for result in results:
        click.echo(result.line())
    sys.exit(0 if passed(results) else 1)


@main.command()
def doctor() -> None:
    """Check the configuration for production: what is set, what is missing, what is unsafe (exit 1 if any)."""
    settings = load_settings()
    findings = review(settings) + [Finding("unsafe", "settings", problem) for problem in unknown_variables()]
    if not settings.embedded_database:
        findings += asyncio.run(probe(settings))
    for finding in findings:
        click.echo(f"{finding.level:<8} {finding.topic:<9} {finding.message}")
    unsafe = sum(finding.level == "unsafe" for finding in findings)
    if unsafe:
        raise click.ClickException(f"{unsafe} unsafe setting(s) above")


@main.command()
def migrate() -> None:
    """Apply database migrations and row-level security policies as the owner role."""
    settings = _settings()
    with embedded_services(settings, need_redis=False) as resolved:
        asyncio.run(_migrate(resolved))
    click.echo("Database is at the newest revision; policies applied.")


@main.group()
def tenant() -> None:
    """Manage tenants (organizations)."""


@tenant.command("create")
@click.option("--slug", required=True, help="Short identifier used at login, e.g. 'acme'.")
@click.option("--name", required=True, help="Display name, e.g. 'Acme Inc.'.")
def tenant_create(slug: str, name: str) -> None:
    """Create a tenant."""
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> Any:
            return await create_tenant(resources.session_maker, slug=slug, name=name, actor="cli")

        organization = asyncio.run(_with_resources(resolved, work))
    click.echo(f"Created tenant '{organization.slug}' ({organization.id}).")


@tenant.command("quota")
@click.option("--slug", required=True, help="The tenant's slug.")
@click.option(
    "--credits",
    "credits",
    required=True,
    type=click.IntRange(min=-1),
    help="The organization's gateway budget in credits (a millionth of the currency unit); -1: none.",
)
def tenant_quota(slug: str, credits: int) -> None:
    """Set a tenant's gateway budget (what all its API keys together may spend)."""
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> int:
            return await set_tenant_quota(resources.session_maker, slug=slug, quota=credits, actor="cli")

        used = asyncio.run(_with_resources(resolved, work))
    limit = "no limit" if credits < 0 else f"{credits} credits"
    click.echo(f"Tenant '{slug}' may now spend {limit} ({used} used so far).")


@tenant.command("export")
@click.argument("slug")
@click.option("--to", "to", type=click.Path(dir_okay=False, path_type=Path), help="Also write the archive here.")
def tenant_export(slug: str, to: Path | None) -> None:
    """Export a tenant's rows and objects into one zip in the object store (platform/tenant-exports/).

    Encrypted columns stay encrypted: only a Lyss with the same LYSS_ENCRYPTION_KEYS can use the archive.
    """
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> tuple[tenant_archive.Manifest, str]:
            with tempfile.TemporaryDirectory(prefix="lyss-export-") as scratch:
                local = Path(scratch) / "tenant.zip"
                manifest = await tenant_archive.export_tenant(
                    resources.session_maker, resources.object_store, slug, local
                )
                name = tenant_archive.export_name(slug)
                await resources.object_store.put(None, name, local, content_type="application/zip")
                if to is not None:
                    shutil.copyfile(local, to)
            return manifest, name

        manifest, name = asyncio.run(_with_resources(resolved, work))
    click.echo(
        f"Exported tenant '{slug}': {sum(manifest.tables.values())} rows in {len(manifest.tables)} tables, "
        f"{len(manifest.objects)} objects, to {name}" + (f" and {to}" if to else "") + "."
    )


@tenant.command("delete")
@click.argument("slug")
@click.option("--confirm", "confirmation", required=True, help="The slug again: erasure cannot be undone.")
def tenant_delete(slug: str, confirmation: str) -> None:
    """Erase every row, object and Redis key of a tenant, then count what is left (exit 1 unless all zero)."""
    if confirmation != slug:
        _fail(f"--confirm must repeat the slug '{slug}' exactly; nothing was erased.")
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> tenant_archive.Erasure:
            return await tenant_archive.erase_tenant(
                resources.session_maker, resources.object_store, resources.redis, slug, actor="cli"
            )

        erasure = asyncio.run(_with_resources(resolved, work))
    click.echo(f"What is left of tenant '{slug}' ({erasure.tenant_id}):")
    for table, count in erasure.rows.items():
        click.echo(f"  {table:<28} {count} rows")
    click.echo(f"  {'object store':<28} {erasure.objects} objects")
    if not erasure.complete:
        _fail(f"tenant '{slug}' was not erased completely: see the counts above.")
    click.echo(f"Tenant '{slug}' is erased.")


@tenant.command("import")
@click.argument("archive")
def tenant_import(archive: str) -> None:
    """Bring back a tenant from ARCHIVE (a file, or a name `lyss tenant export` printed) at the same migration."""
    settings = _settings()
    is_file = Path(archive).is_file()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> tenant_archive.Manifest:
            if is_file:
                return await tenant_archive.import_tenant(
                    resources.session_maker, resources.object_store, resources.redis, Path(archive)
                )
            with tempfile.TemporaryDirectory(prefix="lyss-import-") as scratch:
                local = Path(scratch) / "tenant.zip"
                await resources.object_store.fetch(None, archive, local)
                return await tenant_archive.import_tenant(
                    resources.session_maker, resources.object_store, resources.redis, local
                )

        manifest = asyncio.run(_with_resources(resolved, work))
    click.echo(
        f"Imported tenant '{manifest.slug}' ({manifest.tenant_id}): {sum(manifest.tables.values())} rows, "
        f"{len(manifest.objects)} objects."
    )


# The operator's tenant commands: the logic is app/tenants/platform.py's, shared with /api/platform/tenants.
CLI_OPERATOR = "platform operator (cli)"


def _operator(resources: Resources) -> PlatformTenants:
    return PlatformTenants(
        resources.session_maker,
        resources.redis,
        resources.gateway.catalog,
        resources.job_queue,
        resources.settings,
        actor=CLI_OPERATOR,
    )


def _on_tenant(slug: str, change: Callable[[PlatformTenants, TenantOverview], Awaitable[TenantOverview]]) -> None:
    """Find the tenant by slug, apply `change` as the operator, and print the tenant as it is now."""
    with embedded_services(_settings()) as resolved:

        async def work(resources: Resources) -> TenantOverview:
            async with resources.session_maker() as session:
                tenant = await tenant_by_slug(session, slug)
            return await change(_operator(resources), tenant)

        click.echo(tenant_description(asyncio.run(_with_resources(resolved, work))))


@tenant.command("list")
@click.option("--status", type=click.Choice(["active", "suspended", "inactive"]), help="Only tenants in this state.")
@click.option("--plan", help="Only tenants on this plan.")
def tenant_list(status: str | None, plan: str | None) -> None:
    """List the tenants, with their users and their usage this month."""
    with embedded_services(_settings()) as resolved:

        async def work(resources: Resources) -> list[TenantOverview]:
            async with resources.session_maker() as session:
                return await tenant_overview(session, TenantFilter(status=status, plan=plan))

        click.echo(tenant_table(asyncio.run(_with_resources(resolved, work))))


@tenant.command("show")
@click.argument("slug")
def tenant_show(slug: str) -> None:
    """Show one tenant."""

    async def unchanged(_: PlatformTenants, tenant: TenantOverview) -> TenantOverview:
        return tenant

    _on_tenant(slug, unchanged)


@tenant.command("rename")
@click.argument("slug")
@click.argument("name")
def tenant_rename(slug: str, name: str) -> None:
    """Give a tenant a new display name (its slug stays)."""
    _on_tenant(slug, lambda tenants, tenant: tenants.rename(tenant.id, name))


@tenant.command("suspend")
@click.argument("slug")
def tenant_suspend(slug: str) -> None:
    """Suspend a tenant: its users cannot sign in, its keys are refused, its jobs wait. Nothing is deleted."""
    _on_tenant(slug, lambda tenants, tenant: tenants.suspend(tenant.id))


@tenant.command("reactivate")
@click.argument("slug")
def tenant_reactivate(slug: str) -> None:
    """Reactivate a suspended tenant: sign-in, keys and jobs work again."""
    _on_tenant(slug, lambda tenants, tenant: tenants.reactivate(tenant.id))


@tenant.command("plan")
@click.argument("slug")
@click.argument("plan")
def tenant_plan(slug: str, plan: str) -> None:
    """Set a tenant's subscription plan (by name)."""
    _on_tenant(slug, lambda tenants, tenant: tenants.set_plan(tenant.id, plan))


@main.group()
def admin() -> None:
    """Manage tenant administrators."""


@admin.command("create")
@click.option("--tenant", "tenant_slug", required=True, help="Slug of the tenant the admin belongs to.")
@click.option("--email", required=True, help="The admin's email address, used to sign in.")
@click.option(
    "--super-admin",
    is_flag=True,
    help="A platform operator (super_admin): sees and manages every tenant (Platform in the portal).",
)
def admin_create(tenant_slug: str, email: str, super_admin: bool) -> None:
    """Create a tenant admin. The password is prompted for, or read from stdin when it is not a terminal."""
    role = "super_admin" if super_admin else "tenant_admin"
    password = _read_password()
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> Any:
            return await create_user(
                resources.session_maker,
                tenant_slug=tenant_slug,
                email=email,
                password=password,
                role=role,
                actor="cli",
            )

        user = asyncio.run(_with_resources(resolved, work))
    kind = "platform operator (super_admin)" if super_admin else "tenant admin"
    click.echo(f"Created {kind} {user.email} in tenant '{tenant_slug}'.")


@admin.command("reset-password")
@click.option("--tenant", "tenant_slug", required=True, help="Slug of the tenant the user belongs to.")
@click.option("--email", required=True, help="The user's email address.")
def admin_reset_password(tenant_slug: str, email: str) -> None:
    """Print a one-time link (valid 24 hours) for the user to set a new password; hand it to them."""
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> IssuedPasswordReset:
            return await issue_password_reset_by_email(
                resources.session_maker,
                tenant_slug=tenant_slug,
                email=email,
                public_url=resolved.public_url,
                actor="cli",
            )

        issued = asyncio.run(_with_resources(resolved, work))
    click.echo(f"Password reset link for {issued.email} (works once, until {issued.expires_at:%Y-%m-%d %H:%M} UTC):")
    click.echo(issued.url)


@main.group()
def keys() -> None:
    """Manage the keys that protect secrets at rest."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the first key of LYSS_ENCRYPTION_KEYS.

    Put the new key first and keep the old one after it, run this, then drop the old key.
    """
    settings = _settings()
    with embedded_services(settings) as resolved:

        async def work(resources: Resources) -> tuple[int, int, str]:
            tenants, values = await reencrypt_secrets(resources.session_maker, resources.secret_box)
            return tenants, values, resources.secret_box.current_key_id

        tenants, values, key_id = asyncio.run(_with_resources(resolved, work))
    click.echo(f"Re-encrypted {values} secret(s) in {tenants} tenant(s) under key '{key_id}'.")


@main.group()
def maintenance() -> None:
    """Switch Lyss to read-only and back, on every process within a second, without a restart."""


@maintenance.command("on")
@click.option("--message", required=True, help="What users see: on every page, and in every refused write.")
@click.option(
    "--retry-after",
    type=click.IntRange(1, MAX_RETRY_AFTER),
    default=DEFAULT_RETRY_AFTER,
    show_default=True,
    help="Seconds a client is told to wait (the Retry-After header).",
)
@click.option(
    "--gateway",
    type=click.Choice(GATEWAY_MODES),
    default="serve",
    show_default=True,
    help="Whether /v1 keeps serving API keys or answers 503 too.",
)
def maintenance_on(message: str, retry_after: int, gateway: str) -> None:
    """Writes answer 503 with the message, the portal shows it, jobs pause."""
    try:
        message = check_message(message)
    except ServiceError as error:
        _fail(error.detail)
    state = _switch_maintenance(
        lambda resources: resources.maintenance.turn_on(
            message, retry_after=retry_after, gateway="refuse" if gateway == "refuse" else "serve"
        )
    )
    click.echo(describe_maintenance(state))


@maintenance.command("off")
def maintenance_off() -> None:
    """Writes, jobs and (if refused) the gateway resume."""
    previous = _switch_maintenance(lambda resources: resources.maintenance.turn_off())
    click.echo("Maintenance mode is off." if previous else "Maintenance mode was already off.")


@maintenance.command("status")
def maintenance_status() -> None:
    """Whether maintenance mode is on, since when, and its message."""
    click.echo(describe_maintenance(_switch_maintenance(lambda resources: resources.maintenance.current())))


def _switch_maintenance(work: Callable[[Resources], Awaitable[Maintenance | None]]) -> Maintenance | None:
    settings = _settings()
    with embedded_services(settings) as resolved:
        return asyncio.run(_with_resources(resolved, work))


def _read_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


if __name__ == "__main__":
    main()
