"""The portal over HTTP (no browser): sign-in, CSRF on every form, security headers, roles, form errors."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from app.settings import Settings
from db.provider import ApiToken, Channel
from db.session import tenant_session
from tests.conftest import TEST_PASSWORD, Client, TenantRows
from tests.mock_upstream import MockUpstream

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


async def sign_in(client: Client, tenant: TenantRows, email: str) -> str:
    """Sign in through the portal's form; return the CSRF token its pages carry."""
    form_page = await client.get("/portal/login")
    form_token = FORM_TOKEN.search(form_page.text)
    assert form_token, form_page.text
    response = await client.post(
        "/portal/login",
        data={"tenant": tenant.slug, "email": email, "password": TEST_PASSWORD, "form_token": form_token[1]},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal/"
    dashboard = await client.get("/portal/")
    assert dashboard.status_code == 200
    token = CSRF.search(dashboard.text)
    assert token
    return token[1]


def field_error(html: str, field: str) -> str | None:
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    return found[1] if found else None


async def test_pages_need_a_session_and_carry_strict_security_headers(client: Client) -> None:
    response = await client.get("/portal/usage?model=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login?next=%2Fportal%2Fusage%3Fmodel%3Dx"
    login = await client.get("/portal/login")
    assert login.status_code == 200
    policy = login.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["x-content-type-options"] == "nosniff"
    # Nothing inline for the policy to allow: every script is a file.
    assert "<script>" not in login.text
    assert " style=" not in login.text
    static = await client.get("/portal/static/portal.css")
    assert static.status_code == 200
    assert "content-security-policy" in static.headers
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/portal/"


async def test_sign_in_errors_keep_the_input_and_say_what_is_wrong(client: Client, tenant_a: TenantRows) -> None:
    form_token = FORM_TOKEN.search((await client.get("/portal/login")).text)
    assert form_token
    empty = await client.post("/portal/login", data={"tenant": tenant_a.slug, "form_token": form_token[1]})
    assert empty.status_code == 400
    assert field_error(empty.text, "email") == "This field is required."
    assert f'value="{tenant_a.slug}"' in empty.text  # kept
    form_token = FORM_TOKEN.search(empty.text)  # each rendering of the form carries a fresh token
    assert form_token
    wrong = await client.post(
        "/portal/login",
        data={"tenant": tenant_a.slug, "email": tenant_a.admin.email, "password": "nope", "form_token": form_token[1]},
    )
    assert wrong.status_code == 401
    assert "Invalid" in wrong.text
    assert tenant_a.admin.email in wrong.text
    forged = await client.post(
        "/portal/login",
        data={"tenant": tenant_a.slug, "email": tenant_a.admin.email, "password": TEST_PASSWORD, "form_token": "x"},
    )
    assert forged.status_code == 400
    assert "lyss_session" not in forged.headers.get("set-cookie", "")


def _portal_form_routes(app: Litestar) -> list[str]:
    return [
        route.path
        for route in app.routes
        if isinstance(route, HTTPRoute)
        and route.path.startswith("/portal")
        and any(
            "POST" in handler.http_methods and not handler.opt.get("portal_public") for handler in route.route_handlers
        )
    ]


async def test_every_signed_in_form_refuses_a_post_without_the_csrf_token(
    client: Client, settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    paths = _portal_form_routes(create_app(settings))
    assert {"/portal/channels/new", "/portal/tokens/new", "/portal/logout"} <= set(paths)
    example_id = "00000000-0000-0000-0000-000000000000"
    for path in paths:
        concrete = re.sub(r"\{[^}]+:uuid\}", example_id, path).replace("{action:str}", "disable")
        refused = await client.post(concrete, data={"name": "x"})
        assert refused.status_code == 403, (path, refused.status_code)
        wrong = await client.post(concrete, data={"name": "x", "csrf_token": token[:-2] + "00"})
        assert wrong.status_code == 403, path
    # The session still works, and nothing was created.
    assert (await client.get("/portal/")).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0


async def test_channel_form_errors_sit_next_to_their_fields_and_nothing_is_saved(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "keys": "k"}
    empty = await client.post("/portal/channels/new", data=base | {"name": "", "models": ""})
    assert empty.status_code == 400
    assert field_error(empty.text, "name") == "This field is required."
    assert field_error(empty.text, "models") == "Enter at least one."
    bad = await client.post(
        "/portal/channels/new", data=base | {"name": "x" * 101, "models": "m", "priority": "high", "weight": "0"}
    )
    assert field_error(bad.text, "name") == "At most 100 characters."
    assert field_error(bad.text, "priority") == "Enter a whole number."
    assert field_error(bad.text, "weight") == "At least 1."
    assert 'value="high"' in bad.text  # what was typed stays
    assert 'name="keys"' in bad.text  # keys are never echoed back
    assert ">k<" not in bad.text
    ok = await client.post("/portal/channels/new", data=base | {"name": "primary", "models": "gpt-test\nother"})
    assert ok.status_code == 303
    duplicate = await client.post("/portal/channels/new", data=base | {"name": "primary", "models": "m"})
    assert duplicate.status_code == 409
    assert "already exists" in (field_error(duplicate.text, "name") or "")
    async with tenant_session(session_maker, tenant_a.id) as session:
        channels = list(await session.scalars(select(Channel)))
    assert [(channel.name, channel.models) for channel in channels] == [("primary", ["gpt-test", "other"])]


@pytest.mark.parametrize("path", ["/portal/channels", "/portal/channels/new"])
async def test_an_end_user_cannot_open_admin_pages(client: Client, tenant_a: TenantRows, path: str) -> None:
    await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.get(path)
    assert response.status_code == 403
    assert "administrators" in response.text
    assert 'href="/portal/channels"' not in (await client.get("/portal/")).text  # not in the menu either


async def test_key_is_shown_once_and_users_see_only_their_own_keys(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    created = await client.post(
        "/portal/tokens/new",
        data={"csrf_token": token, "name": "admin key", "quota": "-1", "budget_period": "none", "user_id": ""},
    )
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    key = re.search(r'id="new-key">(sk-lyss-[^<]+)<', created.text)
    assert key
    listing = (await client.get("/portal/tokens")).text
    assert "admin key" in listing
    assert key[1] not in listing
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.scalar(select(ApiToken.key_hash).where(ApiToken.name == "admin key"))
    assert stored
    assert key[1] not in stored

    await client.post("/portal/logout", data={"csrf_token": token})
    assert (await client.get("/portal/")).status_code == 303
    await sign_in(client, tenant_a, tenant_a.user.email)
    own = (await client.get("/portal/tokens")).text
    assert "admin key" not in own
