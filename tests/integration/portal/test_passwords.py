"""Passwords and two-factor sign-in a person manages from the portal: change, admin reset links, MFA self-service."""

from __future__ import annotations

import datetime
import html
import re
from urllib.parse import urlsplit

import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.auth import PasswordReset, User
from db.session import tenant_session
from tests.integration.cli.test_cli import lyss
from tests.support.auth import login
from tests.support.clients import Client, bearer
from tests.support.portal import CSRF, field_error, sign_in
from tests.support.tenants import TEST_PASSWORD, TenantRows, audit_actions

NEW_PASSWORD = "a fresh and rather long passphrase"
RESET_LINK = re.compile(r'id="reset-link">([^<]+)<')


async def _hashed_password(session_maker: async_sessionmaker[AsyncSession], user: User) -> str | None:
    async with tenant_session(session_maker, user.tenant_id) as session:
        return (await session.get_one(User, user.id)).hashed_password


async def _refresh(client: Client, refresh_token: str) -> int:
    return (await client.post("/api/auth/refresh", json={"refresh_token": refresh_token})).status_code


async def test_a_password_change_needs_the_current_password_and_a_good_new_one_and_ends_other_sessions(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    other_session = (await login(client, tenant_a, tenant_a.user.email)).json()["refresh_token"]
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    account = (await client.get("/portal/account")).text
    assert "At least 12 characters; not a common password; not your email address." in account
    before = await _hashed_password(session_maker, tenant_a.user)

    refusals = [
        ({"current_password": "", "new_password": ""}, 400, "current_password", "This field is required."),
        ({"current_password": "wrong password!", "new_password": NEW_PASSWORD}, 403, "current_password", "wrong"),
        ({"current_password": TEST_PASSWORD, "new_password": "short"}, 400, "new_password", "at least 12"),
        ({"current_password": TEST_PASSWORD, "new_password": "password1234"}, 400, "new_password", "too common"),
        ({"current_password": TEST_PASSWORD, "new_password": tenant_a.user.email}, 400, "new_password", "email"),
        ({"current_password": TEST_PASSWORD, "new_password": "x" * 2000}, 400, "new_password", "At most 1024"),
    ]
    for form, status, field, message in refusals:
        refused = await client.post("/portal/account/password", data={"csrf_token": token, **form})
        assert refused.status_code == status, (form, refused.text)
        assert message in html.unescape(field_error(refused.text, field) or ""), (form, refused.text)
        assert await _hashed_password(session_maker, tenant_a.user) == before
    still = await client.post("/api/auth/refresh", json={"refresh_token": other_session})
    assert still.status_code == 200  # the refusals ended no session
    other_session = still.json()["refresh_token"]

    changed = await client.post(
        "/portal/account/password",
        data={"csrf_token": token, "current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 303
    assert "Your password is changed" in (await client.get(changed.headers["location"])).text  # this session lives
    assert await _refresh(client, other_session) == 401
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 401
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200
    assert "user.password_changed" in await audit_actions(session_maker, tenant_a.id)


async def _issue_in_portal(client: Client, tenant: TenantRows, user: User) -> str:
    token = await sign_in(client, tenant, tenant.admin.email)
    detail = (await client.get(f"/portal/users/{user.id}")).text
    assert f'action="/portal/users/{user.id}/password-reset"' in detail
    issued = await client.post(f"/portal/users/{user.id}/password-reset", data={"csrf_token": token})
    assert issued.status_code == 200, issued.text
    assert issued.headers["cache-control"] == "no-store"
    link = RESET_LINK.search(issued.text)
    assert link
    return urlsplit(html.unescape(link[1])).path


async def test_an_admins_reset_link_sets_the_password_once_and_ends_every_session(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    users_session = (await login(client, tenant_a, tenant_a.user.email)).json()["refresh_token"]
    path = await _issue_in_portal(client, tenant_a, tenant_a.user)
    assert path.startswith("/portal/reset/lrst_")
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = (await session.scalars(select(PasswordReset.token_hash))).all()
    assert len(stored) == 1
    assert stored[0] not in path  # only the hash is kept, and it is not the token
    client.cookies.clear()  # the user opens it in their own browser

    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert tenant_a.user.email in page.text
    assert "At least 12 characters" in page.text
    for bad, message in (("", "This field is required."), ("short", "at least 12"), ("y" * 1025, "At most 1024")):
        refused = await client.post(path, data={"new_password": bad})
        assert refused.status_code == 400
        assert message in html.unescape(field_error(refused.text, "new_password") or "")
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 200  # nothing saved yet

    done = await client.post(path, data={"new_password": NEW_PASSWORD})
    assert done.status_code == 200
    assert "Your password is set" in done.text
    assert await _refresh(client, users_session) == 401
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 401
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200

    for again in (await client.get(path), await client.post(path, data={"new_password": "another long passphrase"})):
        assert again.status_code == 404
        assert "unknown, has expired or was already used" in again.text
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200
    for junk in ("/portal/reset/nonsense", "/portal/reset/lrst_" + "0" * 32 + "_nope", path + "x"):
        unknown = await client.get(junk)
        assert unknown.status_code == 404
        assert "unknown, has expired or was already used" in unknown.text
    actions = await audit_actions(session_maker, tenant_a.id)
    assert "user.password_reset_issued" in actions
    assert "user.password_reset_used" in actions


async def test_a_reset_link_expires_and_a_newer_one_replaces_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    first = await _issue_in_portal(client, tenant_a, tenant_a.user)
    second = await _issue_in_portal(client, tenant_a, tenant_a.user)
    assert (await client.get(first)).status_code == 404
    assert (await client.get(second)).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(PasswordReset).values(expires_at=datetime.datetime.now(datetime.UTC)))
        await session.commit()
    expired = await client.post(second, data={"new_password": NEW_PASSWORD})
    assert expired.status_code == 404
    assert "has expired" in expired.text
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 200


async def test_a_reset_link_lifts_a_lock_out_but_is_refused_for_a_deactivated_account(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    path = await _issue_in_portal(client, tenant_a, tenant_a.user)
    async with tenant_session(session_maker, tenant_a.id) as session:
        locked_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        await session.execute(update(User).where(User.id == tenant_a.user.id).values(locked_until=locked_until))
        await session.commit()
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 429
    assert (await client.post(path, data={"new_password": NEW_PASSWORD})).status_code == 200
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200

    second = await _issue_in_portal(client, tenant_a, tenant_a.user)
    token = CSRF.search((await client.get(f"/portal/users/{tenant_a.user.id}")).text)
    assert token
    deactivated = await client.post(f"/portal/users/{tenant_a.user.id}/deactivate", data={"csrf_token": token[1]})
    assert deactivated.status_code == 303
    assert (await client.get(second)).status_code == 404
    assert (await client.post(second, data={"new_password": "yet another long passphrase"})).status_code == 404
    refused = await client.post(f"/portal/users/{tenant_a.user.id}/password-reset", data={"csrf_token": token[1]})
    assert refused.status_code == 409
    assert "is deactivated" in refused.text
    assert "lrst_" not in refused.text
    detail = (await client.get(f"/portal/users/{tenant_a.user.id}")).text
    assert "/password-reset" not in detail
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 401


async def test_the_api_issues_a_link_that_gives_an_oauth_only_user_a_first_password(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(User).where(User.id == tenant_a.user.id).values(hashed_password=None))
        await session.commit()
    admin = bearer((await login(client, tenant_a, tenant_a.admin.email)).json()["access_token"])
    end_user = bearer((await login(client, tenant_b, tenant_b.user.email)).json()["access_token"])
    assert (await client.post(f"/api/users/{tenant_b.admin.id}/password-reset", headers=end_user)).status_code == 403
    assert (await client.post(f"/api/users/{tenant_b.user.id}/password-reset", headers=admin)).status_code == 404

    issued = await client.post(f"/api/users/{tenant_a.user.id}/password-reset", headers=admin)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["email"] == tenant_a.user.email
    done = await client.post(urlsplit(body["url"]).path, data={"new_password": NEW_PASSWORD})
    assert done.status_code == 200
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200


async def test_an_end_user_cannot_issue_reset_links_in_the_portal(client: Client, tenant_a: TenantRows) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    refused = await client.post(f"/portal/users/{tenant_a.admin.id}/password-reset", data={"csrf_token": token})
    assert refused.status_code == 403
    assert "lrst_" not in refused.text


async def test_the_cli_prints_a_reset_link(
    client: Client, settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    result = await lyss(settings, "admin", "reset-password", "--tenant", tenant_a.slug, "--email", tenant_a.user.email)
    assert result.exit_code == 0, result.output
    link = result.output.strip().splitlines()[-1]
    assert urlsplit(link).path.startswith("/portal/reset/lrst_")  # under the command's LYSS_PUBLIC_URL
    assert (await client.post(urlsplit(link).path, data={"new_password": NEW_PASSWORD})).status_code == 200
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200
    unknown = await lyss(settings, "admin", "reset-password", "--tenant", tenant_a.slug, "--email", "no@one.example")
    assert unknown.exit_code == 1
    assert "no user has the email" in unknown.output


async def _forget_used_step(session_maker: async_sessionmaker[AsyncSession], user: User) -> None:
    # Each accepted code burns its 30 s step; the next check would otherwise need the clock to move on.
    async with tenant_session(session_maker, user.tenant_id) as session:
        await session.execute(update(User).where(User.id == user.id).values(mfa_last_used_step=None))
        await session.commit()


async def test_mfa_enrolment_keeps_the_key_after_a_wrong_code_codes_are_replaced_and_mfa_turned_off(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    started = await client.post("/portal/account/mfa", data={"csrf_token": token})
    secret = re.search(r'id="mfa-secret">([A-Z2-7]+)<', started.text)
    assert secret
    wrong = await client.post("/portal/account/mfa/confirm", data={"csrf_token": token, "code": "000000"})
    assert wrong.status_code == 400
    assert field_error(wrong.text, "code")
    assert f'id="mfa-secret">{secret[1]}<' in wrong.text  # the same key, still on screen
    assert "<svg" in wrong.text
    empty = await client.post("/portal/account/mfa/confirm", data={"csrf_token": token, "code": ""})
    assert field_error(empty.text, "code") == "This field is required."
    totp = pyotp.TOTP(secret[1])
    confirmed = await client.post("/portal/account/mfa/confirm", data={"csrf_token": token, "code": totp.now()})
    old_codes = confirmed.text.split('id="recovery-codes">')[1].split("</pre>")[0].split()
    assert len(old_codes) == 10
    await _forget_used_step(session_maker, tenant_a.user)

    refused = await client.post("/portal/account/mfa/recovery-codes", data={"csrf_token": token, "code": "123456"})
    assert refused.status_code == 403
    assert field_error(refused.text, "code") == "The code is wrong or was already used."
    replaced = await client.post("/portal/account/mfa/recovery-codes", data={"csrf_token": token, "code": totp.now()})
    assert replaced.status_code == 200
    new_codes = replaced.text.split('id="recovery-codes">')[1].split("</pre>")[0].split()
    assert len(new_codes) == 10
    assert not set(new_codes) & set(old_codes)
    await _forget_used_step(session_maker, tenant_a.user)
    ticket = (await login(client, tenant_a, tenant_a.user.email)).json()["mfa_ticket"]
    old = await client.post("/api/auth/login/mfa", json={"mfa_ticket": ticket, "recovery_code": old_codes[0]})
    assert old.status_code == 401
    ticket = (await login(client, tenant_a, tenant_a.user.email)).json()["mfa_ticket"]
    new = await client.post("/api/auth/login/mfa", json={"mfa_ticket": ticket, "recovery_code": new_codes[0]})
    assert new.status_code == 200, new.text

    off_refused = await client.post(
        "/portal/account/mfa/disable", data={"csrf_token": token, "password": "not it at all", "code": totp.now()}
    )
    assert off_refused.status_code == 403
    assert "The password or the code is wrong." in off_refused.text
    account = (await client.get("/portal/account")).text
    assert 'id="mfa-off"' in account  # still on
    await _forget_used_step(session_maker, tenant_a.user)
    off = await client.post(
        "/portal/account/mfa/disable", data={"csrf_token": token, "password": TEST_PASSWORD, "code": totp.now()}
    )
    assert off.status_code == 303
    assert "Two-factor authentication is off." in (await client.get(off.headers["location"])).text
    assert (await login(client, tenant_a, tenant_a.user.email)).json()["status"] == "authenticated"
    assert CSRF.search(account)
    actions = await audit_actions(session_maker, tenant_a.id)
    assert "mfa.recovery_codes_regenerated" in actions
    assert "mfa.disabled" in actions
