"""Signing in through the API: password, TOTP enrolment, the tenant's policy, and OAuth through the mock provider."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import Client, bearer
from tests.support.tenants import TEST_PASSWORD, TenantRows


async def login(client: Client, tenant: TenantRows, email: str, password: str = TEST_PASSWORD, **extra: Any) -> Any:
    return await client.post(
        "/api/auth/login", json={"tenant": tenant.slug, "email": email, "password": password, **extra}
    )


async def set_policy(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, **policy: bool) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        organization = await session.get_one(Organization, tenant.id)
        organization.settings = {**organization.settings, **policy}
        await session.commit()


async def enrol(client: Client, tokens: dict[str, Any]) -> tuple[pyotp.TOTP, list[str]]:
    enrollment = (await client.post("/api/auth/mfa/enroll", headers=bearer(tokens["access_token"]))).json()
    assert enrollment["otpauth_uri"].startswith("otpauth://totp/")
    assert enrollment["qr_svg"].startswith("<svg")
    totp = pyotp.TOTP(enrollment["secret"])
    confirmed = await client.post(
        "/api/auth/mfa/confirm", json={"code": totp.now()}, headers=bearer(tokens["access_token"])
    )
    assert confirmed.status_code == 200, confirmed.text
    return totp, confirmed.json()["recovery_codes"]


def code_of_next_step(totp: pyotp.TOTP) -> str:
    # The server accepts the previous, current and next 30 s step; a later step is a fresh code.
    return totp.at(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30))


async def start_oauth(client: Client, tenant: TenantRows, *, mode: str = "api", **params: str) -> str:
    """Begin signing in through the tenant's provider "corp"; return where the browser is sent (the provider)."""
    response = await client.get(
        f"/api/auth/tenants/{tenant.slug}/oauth/corp/authorize", params={"mode": mode, **params}, follow_redirects=False
    )
    assert response.status_code in (302, 303, 307), response.text
    return str(response.headers["location"])


async def through_provider(client: Client, authorization_url: str) -> httpx.Response:
    """Follow the browser's path: to the provider (real HTTP), and back to our callback."""
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(authorization_url)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["location"])
    assert (back.scheme, back.netloc, back.path) == ("http", "lyss.test", "/api/auth/oauth/callback")
    return await client.get(f"{back.path}?{back.query}", follow_redirects=False)
