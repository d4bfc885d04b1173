"""The `lyss` command against the real database: provisioning, bad input, one transaction per command."""

from __future__ import annotations

import asyncio

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cli import main
from app.settings import Settings
from app.tenants.services import lookup_tenant_by_slug
from db.auth import User
from db.session import tenant_session
from db.tenant import Organization
from tests.support.commands import cli_environment
from tests.support.tenants import audit_actions

GOOD_PASSWORD = "a long enough passphrase"


async def lyss(settings: Settings, *arguments: str, stdin: str | None = None) -> Result:
    # In a thread: the command runs its own event loop, as it does from a shell.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(arguments), env=cli_environment(settings), input=stdin)


async def audit_actions_of(session_maker: async_sessionmaker[AsyncSession], slug: str) -> list[str]:
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, slug)
    assert tenant is not None
    return await audit_actions(session_maker, tenant.id)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["worker"],
        ["migrate"],
        ["tenant", "create"],
        ["tenant", "quota"],
        ["admin", "create"],
        ["admin", "reset-password"],
        ["keys", "rotate"],
    ],
    ids=" ".join,
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main" in result.output or "Usage: lyss" in result.output
    options = {
        "tenant create": ["--slug", "--name"],
        "tenant quota": ["--slug", "--credits"],
        "admin create": ["--tenant", "--email"],
        "admin reset-password": ["--tenant", "--email"],
    }
    for option in options.get(" ".join(command), []):
        assert option in result.output


async def test_tenant_create_makes_the_tenant_and_an_audit_event(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    result = await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme Inc.")
    assert result.exit_code == 0, result.output
    assert "Created tenant 'acme'" in result.output
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, "acme")
    assert tenant is not None
    async with tenant_session(session_maker, tenant.id) as session:
        organization = await session.get_one(Organization, tenant.id)
        assert organization.name == "Acme Inc."
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created"]


@pytest.mark.parametrize(
    ("slug", "name", "message"),
    [
        ("Not A Slug", "X", "'Not A Slug' is not a valid slug"),
        ("-leading", "X", "'-leading' is not a valid slug"),
        ("ok", "   ", "the tenant name must be 1-255 characters long"),
    ],
)
async def test_tenant_create_refuses_bad_input_in_one_line(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], slug: str, name: str, message: str
) -> None:
    result = await lyss(settings, "tenant", "create", "--slug", slug, "--name", name)
    assert result.exit_code == 1
    assert result.output.startswith(f"lyss: {message}")
    assert len(result.output.strip().splitlines()) == 1
    async with session_maker() as session:
        assert await lookup_tenant_by_slug(session, slug.strip()) is None


async def test_a_duplicate_slug_is_refused_and_nothing_is_added(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    assert (await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme")).exit_code == 0
    result = await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Other Acme")
    assert result.exit_code == 1
    assert result.output.strip() == "lyss: the slug 'acme' is already taken; choose another"
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created"]


async def test_admin_create_reads_the_password_from_stdin_and_hashes_it(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme")
    result = await lyss(
        settings, "admin", "create", "--tenant", "acme", "--email", "Root@Acme.Example.com", stdin=f"{GOOD_PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert GOOD_PASSWORD not in result.output
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, "acme")
    assert tenant is not None
    async with tenant_session(session_maker, tenant.id) as session:
        user = await session.scalar(select(User))
    assert user is not None
    assert (user.email, user.role, user.status) == ("root@acme.example.com", "tenant_admin", "active")
    assert user.hashed_password is not None
    assert user.hashed_password.startswith("$argon2id$")
    assert PasswordHasher().verify(user.hashed_password, GOOD_PASSWORD)
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created", "user.created"]


@pytest.mark.parametrize(
    ("tenant", "email", "password", "message"),
    [
        ("nobody", "a@acme.example.com", GOOD_PASSWORD, "lyss: no tenant has the slug 'nobody'"),
        ("acme", "not-an-email", GOOD_PASSWORD, "lyss: 'not-an-email' is not a valid email address"),
        ("acme", "a@acme.example.com", "", "lyss: the password is empty"),
        ("acme", "a@acme.example.com", "short", "lyss: the password must be at least 12 characters long"),
    ],
)
async def test_admin_create_refuses_bad_input_and_creates_nothing(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tenant: str,
    email: str,
    password: str,
    message: str,
) -> None:
    await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme")
    result = await lyss(settings, "admin", "create", "--tenant", tenant, "--email", email, stdin=f"{password}\n")
    assert result.exit_code == 1
    assert result.output.startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created"]


async def test_a_duplicate_admin_email_is_refused_whatever_its_case(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme")
    first = await lyss(
        settings, "admin", "create", "--tenant", "acme", "--email", "a@acme.example.com", stdin=GOOD_PASSWORD
    )
    second = await lyss(
        settings, "admin", "create", "--tenant", "acme", "--email", "A@ACME.example.com", stdin=GOOD_PASSWORD
    )
    assert first.exit_code == 0
    assert second.exit_code == 1
    assert second.output.strip() == "lyss: 'a@acme.example.com' already has an account in tenant 'acme'"
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, "acme")
    assert tenant is not None
    async with tenant_session(session_maker, tenant.id) as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created", "user.created"]


async def test_migrate_is_idempotent(settings: Settings) -> None:
    for _ in range(2):
        result = await lyss(settings, "migrate")
        assert result.exit_code == 0, result.output
        assert "Database is at the newest revision; policies applied." in result.output


async def test_migrate_needs_the_owner_url(settings: Settings) -> None:
    environment = cli_environment(settings)
    del environment["DATABASE_OWNER_URL"]
    result = await asyncio.to_thread(CliRunner().invoke, main, ["migrate"], env=environment)
    assert result.exit_code == 1
    assert result.output.startswith("lyss: DATABASE_OWNER_URL is required to migrate")


async def test_tenant_quota_sets_the_organization_budget(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    await lyss(settings, "tenant", "create", "--slug", "acme", "--name", "Acme")
    result = await lyss(settings, "tenant", "quota", "--slug", "acme", "--credits", "5000")
    assert result.exit_code == 0, result.output
    assert "may now spend 5000 credits (0 used so far)" in result.output
    async with session_maker() as session:
        tenant = await lookup_tenant_by_slug(session, "acme")
    assert tenant is not None
    async with tenant_session(session_maker, tenant.id) as session:
        assert (await session.get_one(Organization, tenant.id)).quota == 5000
    assert await audit_actions_of(session_maker, "acme") == ["tenant.created", "tenant.quota_changed"]
    unknown = await lyss(settings, "tenant", "quota", "--slug", "nobody", "--credits", "1")
    assert unknown.exit_code == 1
    assert unknown.output.startswith("lyss: no tenant has the slug 'nobody'")
