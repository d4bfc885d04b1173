"""Sign-in flows through the HTTP API against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.auth import Invitation, User, UserSession
from db.session import tenant_session
from tests.support.auth import code_of_next_step, enrol, login, set_policy
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.tenants import TEST_PASSWORD, TenantRows, audit_actions

NEW_PASSWORD = "a brand new passphrase 42"


# --- password sign-in, refresh, logout ----------------------------------------------------------


async def test_login_refresh_logout(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    response = await login(client, tenant_a, tenant_a.user.email.upper())  # emails are case-insensitive
    assert response.status_code == 200
    tokens = response.json()
    assert tokens["status"] == "authenticated"
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    me = await client.get("/api/me", headers=bearer(tokens["access_token"]))
    assert me.json()["email"] == tenant_a.user.email

    refreshed = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    new_tokens = refreshed.json()
    assert new_tokens["refresh_token"] != tokens["refresh_token"]
    assert (await client.get("/api/me", headers=bearer(new_tokens["access_token"]))).status_code == 200

    assert (await client.post("/api/auth/logout", headers=bearer(new_tokens["access_token"]))).status_code == 204
    # Logged out server-side: the access token dies now (not in 15 minutes) and so does the refresh token.
    assert (await client.get("/api/me", headers=bearer(new_tokens["access_token"]))).status_code == 401
    assert (
        await client.post("/api/auth/refresh", json={"refresh_token": new_tokens["refresh_token"]})
    ).status_code == 401

    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = (await session.scalars(select(UserSession).order_by(UserSession.created_at))).all()
    assert [row.ended_reason for row in rows] == ["rotated", "logout"]
    assert len({row.family_id for row in rows}) == 1
    assert all(row.refresh_token_hash and len(row.refresh_token_hash) == 64 for row in rows)
    assert tokens["refresh_token"] not in {row.refresh_token_hash for row in rows}  # stored hashed
    assert await audit_actions(session_maker, tenant_a.id) == ["login.succeeded", "session.revoked"]


async def test_a_reused_refresh_token_ends_the_whole_family(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    first = (await login(client, tenant_a, tenant_a.user.email)).json()
    second = (await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    other_login = (await login(client, tenant_a, tenant_a.user.email)).json()  # another device: unaffected

    stolen = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401
    assert "already used" in stolen.json()["detail"]

    # The legitimate holder of the newest tokens is thrown out too: refresh and access both fail.
    assert (await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})).status_code == 401
    assert (await client.get("/api/me", headers=bearer(second["access_token"]))).status_code == 401
    assert (await client.get("/api/me", headers=bearer(other_login["access_token"]))).status_code == 200
    assert "session.refresh_reuse_detected" in await audit_actions(session_maker, tenant_a.id)


async def test_logout_everywhere_ends_every_session(client: Client, tenant_a: TenantRows) -> None:
    phone = (await login(client, tenant_a, tenant_a.user.email)).json()
    laptop = (await login(client, tenant_a, tenant_a.user.email)).json()
    response = await client.post("/api/auth/logout-all", headers=bearer(laptop["access_token"]))
    assert response.json() == {"sessions_ended": 2}
    for tokens in (phone, laptop):
        assert (await client.get("/api/me", headers=bearer(tokens["access_token"]))).status_code == 401
        assert (
            await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        ).status_code == 401


async def test_unknown_email_and_wrong_password_get_the_same_answer(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    wrong_password = await login(client, tenant_a, tenant_a.user.email, "not the password at all")
    unknown_email = await login(client, tenant_a, "nobody@alpha.example.com", "not the password at all")
    unknown_tenant = await client.post(
        "/api/auth/login", json={"tenant": "no-such-org", "email": tenant_a.user.email, "password": TEST_PASSWORD}
    )
    bodies = [(r.status_code, r.json()["detail"]) for r in (wrong_password, unknown_email, unknown_tenant)]
    assert bodies == [(401, "Invalid organization, email or password.")] * 3
    assert await audit_actions(session_maker, tenant_a.id) == ["login.failed", "login.failed"]


async def test_every_refusal_spends_one_argon2_verification(
    client: Client, tenant_a: TenantRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Equal work, hence similar timing: an unknown organization or email is verified against a decoy hash.
    from app.auth import passwords

    verifications: list[str] = []
    real_verify = passwords._verify

    def counting_verify(hashed: str, password: str) -> bool:
        verifications.append(hashed)
        return real_verify(hashed, password)

    monkeypatch.setattr(passwords, "_verify", counting_verify)
    attempts = [
        ("wrong password", tenant_a.slug, tenant_a.user.email),
        ("unknown email", tenant_a.slug, "ghost@alpha.example.com"),
        ("unknown organization", "no-such-org", tenant_a.user.email),
    ]
    for _, slug, email in attempts:
        before = len(verifications)
        response = await client.post(
            "/api/auth/login", json={"tenant": slug, "email": email, "password": "not the password at all"}
        )
        assert response.status_code == 401
        assert len(verifications) == before + 1
    assert all(hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for hashed in verifications)


async def test_lock_out_after_repeated_failures_then_unlock_after_the_window(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(3):  # the test settings lock after 3 failures, for 2 seconds
        assert (await login(client, tenant_a, tenant_a.user.email, "wrong wrong wrong")).status_code == 401
    locked = await login(client, tenant_a, tenant_a.user.email)  # even the right password is refused now
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "Too many failed sign-in attempts" in locked.json()["detail"]
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.get_one(User, tenant_a.user.id)
        assert user.login_attempts == 3
        assert user.locked_until is not None

    await asyncio.sleep(2.2)
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.get_one(User, tenant_a.user.id)
        assert (user.login_attempts, user.locked_until) == (0, None)
    actions = await audit_actions(session_maker, tenant_a.id)
    assert actions.count("login.failed") == 3
    assert "login.locked_out" in actions
    assert "login.refused_locked" in actions
    assert actions[-1] == "login.succeeded"


async def test_an_unknown_email_locks_out_exactly_like_a_real_one(client: Client, tenant_a: TenantRows) -> None:
    answers = []
    for email in (tenant_a.user.email, "ghost@alpha.example.com"):
        statuses = [(await login(client, tenant_a, email, "wrong wrong wrong")).status_code for _ in range(4)]
        answers.append(statuses)
    assert answers[0] == answers[1] == [401, 401, 401, 429]


async def test_per_address_limit(settings: Settings, tenant_a: TenantRows) -> None:
    strict = msgspec.structs.replace(settings, login_ip_limit_per_minute=3, login_max_failures=50)
    async with app_client(strict) as client:
        statuses = [(await login(client, tenant_a, f"x{n}@alpha.example.com", "nope")).status_code for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_a_changed_argon2_parameter_set_is_rehashed_at_login(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    from argon2 import PasswordHasher

    weak_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(TEST_PASSWORD)
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.get_one(User, tenant_a.user.id)
        user.hashed_password = weak_hash
        await session.commit()
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        rehashed = (await session.get_one(User, tenant_a.user.id)).hashed_password
    assert rehashed != weak_hash
    assert rehashed is not None
    assert "m=65536,t=3" in rehashed


async def test_password_change_ends_the_other_sessions(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    other = (await login(client, tenant_a, tenant_a.user.email)).json()
    current = (await login(client, tenant_a, tenant_a.user.email)).json()
    wrong = await client.post(
        "/api/auth/password",
        json={"current_password": "not it at all", "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert wrong.status_code == 403
    weak = await client.post(
        "/api/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": "password1234"},
        headers=bearer(current["access_token"]),
    )
    assert weak.status_code == 400
    assert "too common" in weak.json()["detail"]
    changed = await client.post(
        "/api/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert changed.status_code == 204
    assert (await client.get("/api/me", headers=bearer(current["access_token"]))).status_code == 200
    assert (await client.get("/api/me", headers=bearer(other["access_token"]))).status_code == 401
    assert (await login(client, tenant_a, tenant_a.user.email)).status_code == 401
    assert (await login(client, tenant_a, tenant_a.user.email, NEW_PASSWORD)).status_code == 200
    assert "user.password_changed" in await audit_actions(session_maker, tenant_a.id)


# --- tenants --------------------------------------------------------------------------------------


async def test_a_user_of_tenant_a_cannot_sign_in_through_tenant_b(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    through_b = await login(client, tenant_b, tenant_a.user.email)
    assert through_b.status_code == 401


async def test_a_token_of_tenant_a_is_useless_against_tenant_b(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows
) -> None:
    tokens = (await login(client, tenant_a, tenant_a.admin.email)).json()
    tenant = (await client.get("/api/tenant", headers=bearer(tokens["access_token"]))).json()
    assert tenant["id"] == str(tenant_a.id)
    # B's provider is not A's admin's to change, whatever the id: it does not exist for A.
    patch = await client.patch(
        f"/api/auth/oauth-providers/{tenant_b.oauth_provider.id}",
        json={"is_enabled": False},
        headers=bearer(tokens["access_token"]),
    )
    assert patch.status_code == 404
    # And a refresh token of A, re-labelled with B's tenant, finds nothing there.
    relabelled = tokens["refresh_token"].replace(tenant_a.id.hex, tenant_b.id.hex)
    assert (await client.post("/api/auth/refresh", json={"refresh_token": relabelled})).status_code == 401


# --- portal cookie sessions -----------------------------------------------------------------------


async def test_portal_session_cookie_with_csrf(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    response = await login(client, tenant_a, tenant_a.admin.email, session="portal")
    assert response.status_code == 200
    assert "access_token" not in response.json()
    csrf = response.json()["csrf_token"]
    set_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie
    assert client.cookies.get("lyss_session")

    assert (await client.get("/api/me")).json()["email"] == tenant_a.admin.email
    forged = await client.patch("/api/tenant/policy", json={"allow_self_signup": True})
    assert forged.status_code == 403  # an unsafe request without the CSRF header is refused
    allowed = await client.patch("/api/tenant/policy", json={"allow_self_signup": True}, headers={"X-CSRF-Token": csrf})
    assert allowed.json()["allow_self_signup"] is True

    assert (await client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
    assert (await client.get("/api/me")).status_code == 401
    async with tenant_session(session_maker, tenant_a.id) as session:
        row = await session.scalar(select(UserSession))
    assert row is not None
    assert (row.kind, row.ended_reason) == ("portal", "logout")


async def test_a_stolen_cookie_is_dead_after_logout(client: Client, settings: Settings, tenant_a: TenantRows) -> None:
    response = await login(client, tenant_a, tenant_a.admin.email, session="portal")
    cookie = client.cookies.get("lyss_session")
    csrf = response.json()["csrf_token"]
    await client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    async with app_client(settings) as thief:
        thief.cookies.set("lyss_session", cookie or "")
        assert (await thief.get("/api/me")).status_code == 401


# --- TOTP MFA -------------------------------------------------------------------------------------


async def test_mfa_login_with_ticket_replay_refusal_and_single_use_recovery_codes(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    # The code of this step, or of the one before the step confirmation used if a step boundary passes
    # meanwhile: burnt either way, and still inside the accepted window.
    enrolled_at = datetime.datetime.now(datetime.UTC)
    totp, recovery_codes = await enrol(client, tokens)
    assert len(recovery_codes) == 10
    assert len(set(recovery_codes)) == 10

    first = (await login(client, tenant_a, tenant_a.user.email)).json()
    assert first["status"] == "mfa_required"
    assert "access_token" not in first
    # The ticket is not an access token.
    assert (await client.get("/api/me", headers=bearer(first["mfa_ticket"]))).status_code == 401

    # The code used at confirmation (or an earlier step's) is burnt, even on a new ticket.
    burnt_code = totp.at(enrolled_at)
    replay = await client.post("/api/auth/login/mfa", json={"mfa_ticket": first["mfa_ticket"], "code": burnt_code})
    assert replay.status_code == 401
    fresh_code = code_of_next_step(totp)
    ok = await client.post("/api/auth/login/mfa", json={"mfa_ticket": first["mfa_ticket"], "code": fresh_code})
    assert ok.status_code == 200
    assert ok.json()["status"] == "authenticated"
    # A ticket buys one session, and a code one sign-in.
    again = await client.post("/api/auth/login/mfa", json={"mfa_ticket": first["mfa_ticket"], "code": fresh_code})
    assert again.status_code == 401

    second = (await login(client, tenant_a, tenant_a.user.email)).json()
    replayed = await client.post("/api/auth/login/mfa", json={"mfa_ticket": second["mfa_ticket"], "code": fresh_code})
    assert replayed.status_code == 401
    with_recovery = await client.post(
        "/api/auth/login/mfa", json={"mfa_ticket": second["mfa_ticket"], "recovery_code": recovery_codes[0].upper()}
    )
    assert with_recovery.status_code == 200

    third = (await login(client, tenant_a, tenant_a.user.email)).json()
    reused = await client.post(
        "/api/auth/login/mfa", json={"mfa_ticket": third["mfa_ticket"], "recovery_code": recovery_codes[0]}
    )
    assert reused.status_code == 401
    other_code = await client.post(
        "/api/auth/login/mfa", json={"mfa_ticket": third["mfa_ticket"], "recovery_code": recovery_codes[1]}
    )
    assert other_code.status_code == 200

    actions = await audit_actions(session_maker, tenant_a.id)
    assert "mfa.enabled" in actions
    assert actions.count("mfa.recovery_code_used") == 2
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.get_one(User, tenant_a.user.id)
    assert user.mfa_secret is not None
    assert user.mfa_secret.startswith("v1:")
    assert totp.secret not in user.mfa_secret


async def test_wrong_codes_burn_the_ticket_and_count_toward_lock_out(
    client: Client, settings: Settings, tenant_a: TenantRows
) -> None:
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    totp, _ = await enrol(client, tokens)
    ticket = (await login(client, tenant_a, tenant_a.user.email)).json()["mfa_ticket"]
    statuses = [
        (await client.post("/api/auth/login/mfa", json={"mfa_ticket": ticket, "code": "000000"})).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 401]
    locked = await client.post("/api/auth/login/mfa", json={"mfa_ticket": ticket, "code": code_of_next_step(totp)})
    assert locked.status_code == 429  # three wrong codes lock the account like three wrong passwords


async def test_disable_mfa_needs_password_and_code(client: Client, tenant_a: TenantRows) -> None:
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    totp, _ = await enrol(client, tokens)
    headers = bearer(tokens["access_token"])
    wrong = await client.post(
        "/api/auth/mfa/disable", json={"password": "nope nope nope", "code": code_of_next_step(totp)}, headers=headers
    )
    assert wrong.status_code == 403
    ok = await client.post(
        "/api/auth/mfa/disable", json={"password": TEST_PASSWORD, "code": code_of_next_step(totp)}, headers=headers
    )
    assert ok.status_code == 204
    assert (await login(client, tenant_a, tenant_a.user.email)).json()["status"] == "authenticated"


async def test_a_tenant_can_require_mfa_for_admins(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    await set_policy(session_maker, tenant_a, require_mfa_for_admins=True)
    limited = (await login(client, tenant_a, tenant_a.admin.email)).json()
    assert limited["status"] == "mfa_enrollment_required"
    assert "refresh_token" not in limited
    headers = bearer(limited["access_token"])
    blocked = await client.get("/api/tenant", headers=headers)
    assert blocked.status_code == 403
    assert "two-factor" in blocked.json()["detail"]
    totp, _ = await enrol(client, limited)
    mfa = (await login(client, tenant_a, tenant_a.admin.email)).json()
    assert mfa["status"] == "mfa_required"
    full = await client.post(
        "/api/auth/login/mfa", json={"mfa_ticket": mfa["mfa_ticket"], "code": code_of_next_step(totp)}
    )
    assert (await client.get("/api/tenant", headers=bearer(full.json()["access_token"]))).status_code == 200
    # End users are not affected by the admin policy.
    assert (await login(client, tenant_a, tenant_a.user.email)).json()["status"] == "authenticated"


# --- getting an account ---------------------------------------------------------------------------


async def test_invite_accept_then_login(
    client: Client,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    invited = await client.post(
        "/api/auth/invitations", json={"email": "New.Person@Alpha.example.com"}, headers=auth_headers(tenant_a.admin)
    )
    assert invited.status_code == 201
    token = invited.json()["token"]
    assert invited.json()["email"] == "new.person@alpha.example.com"
    by_user = await client.post(
        "/api/auth/invitations", json={"email": "x@alpha.example.com"}, headers=auth_headers(tenant_a.user)
    )
    assert by_user.status_code == 403  # end users cannot invite

    weak = await client.post("/api/auth/invitations/accept", json={"token": token, "password": "short"})
    assert weak.status_code == 400
    accepted = await client.post(
        "/api/auth/invitations/accept", json={"token": token, "password": NEW_PASSWORD, "full_name": "New Person"}
    )
    assert accepted.status_code == 201
    assert accepted.json()["role"] == "end_user"
    again = await client.post("/api/auth/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
    assert again.status_code == 404
    assert (await login(client, tenant_a, "new.person@alpha.example.com", NEW_PASSWORD)).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        invitation = await session.scalar(select(Invitation))
    assert invitation is not None
    assert invitation.accepted_at is not None
    assert invitation.token_hash != token


async def test_self_sign_up_only_where_allowed_and_nothing_left_by_a_failed_one(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    body = {"tenant": tenant_a.slug, "email": "self@alpha.example.com", "password": NEW_PASSWORD}
    refused = await client.post("/api/auth/signup", json=body)
    assert refused.status_code == 403
    await set_policy(session_maker, tenant_a, allow_self_signup=True)
    weak = await client.post("/api/auth/signup", json={**body, "password": "qwerty123456"})
    assert weak.status_code == 400
    bad_email = await client.post("/api/auth/signup", json={**body, "email": "not-an-email"})
    assert bad_email.status_code == 400
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 2  # nothing half-created
    created = await client.post("/api/auth/signup", json=body)
    assert created.status_code == 201
    assert created.json()["role"] == "end_user"
    duplicate = await client.post("/api/auth/signup", json=body)
    assert duplicate.status_code == 409
    assert (await login(client, tenant_a, "self@alpha.example.com", NEW_PASSWORD)).status_code == 200


async def test_roles_guard_admin_routes(client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders) -> None:
    assert (await client.get("/api/tenant/policy", headers=auth_headers(tenant_a.user))).status_code == 403
    assert (await client.get("/api/auth/oauth-providers", headers=auth_headers(tenant_a.user))).status_code == 403
    assert (await client.get("/api/tenant/policy", headers=auth_headers(tenant_a.admin))).status_code == 200
