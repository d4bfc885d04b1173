"""Getting an account from a browser: invitation links (accept, re-issue, revoke) and the sign-up page."""

from __future__ import annotations

import datetime
import html
import re
from typing import Any

from litestar import Litestar
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.auth import Invitation, User
from db.session import tenant_session
from db.tenant import Organization
from tests.support.auth import set_policy
from tests.support.clients import AuthHeaders, Client, client_of
from tests.support.portal import FORM_TOKEN, field_error, sign_in
from tests.support.tenants import TenantRows, audit_actions

LINK = re.compile(r'id="invitation-link">([^<]+)<')
GOOD_PASSWORD = "a long and unusual passphrase 42"


def message_at(page: str, field: str) -> str:
    return html.unescape(field_error(page, field) or "")


def form_token(page: str) -> str:
    found = FORM_TOKEN.search(page)
    assert found, page
    return found[1]


async def invite(client: Client, csrf: str, email: str = "joiner@alpha.example.com") -> str:
    """Invite `email` through the portal; the link the admin is shown."""
    created = await client.post("/portal/users/invite", data={"csrf_token": csrf, "email": email, "role": "end_user"})
    assert created.status_code == 200, created.text
    link = LINK.search(created.text)
    assert link, created.text
    return html.unescape(link[1])


async def count(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, model: Any) -> int:
    async with tenant_session(session_maker, tenant.id) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_invitee_opens_the_link_chooses_a_password_and_is_signed_in_once(
    client: Client,
    app: Litestar,
    settings: Settings,
    tenant_a: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    link = await invite(client, csrf)
    assert link.startswith(f"{settings.public_url}/portal/join/linv_")
    path = link.removeprefix(settings.public_url)
    users_before = await count(session_maker, tenant_a, User)
    async with client_of(app) as invitee:
        shown = await invitee.get(path)
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"  # the address is the invitation
        assert tenant_a.admin.email not in shown.text
        assert "joiner@alpha.example.com" in shown.text
        assert "at least 12 characters" in shown.text  # the rules, before anything is typed
        assert "not be your email address" in shown.text

        async def accept(password: str, full_name: str = "Jo Iner", token: str | None = None) -> Any:
            page = await invitee.get(path)
            data = {"form_token": token or form_token(page.text), "password": password, "full_name": full_name}
            return await invitee.post(path, data=data)

        empty = await accept("")
        assert empty.status_code == 400
        assert message_at(empty.text, "password") == "This field is required."
        short = await accept("short one")
        assert short.status_code == 400
        assert "at least 12 characters" in message_at(short.text, "password")
        assert 'value="Jo Iner"' in short.text  # kept
        the_email = await accept("joiner@alpha.example.com")
        assert "must not be the email address" in message_at(the_email.text, "password")
        common = await accept("password1234")
        assert "too common" in message_at(common.text, "password")
        long_name = await accept(GOOD_PASSWORD, full_name="x" * 201)
        assert long_name.status_code == 400
        assert message_at(long_name.text, "full_name") == "At most 200 characters."
        forged = await accept(GOOD_PASSWORD, token="not-the-cookie-value")
        assert forged.status_code == 400
        assert "expired" in forged.text
        assert await count(session_maker, tenant_a, User) == users_before  # nothing saved

        joined = await accept(GOOD_PASSWORD)
        assert joined.status_code == 303, joined.text
        assert joined.headers["location"] == "/portal/"
        dashboard = await invitee.get("/portal/")
        assert dashboard.status_code == 200
        assert "joiner@alpha.example.com" in dashboard.text  # signed in as the invitee
        again = await invitee.get(path)
        assert again.status_code == 404
        assert "does not work" in again.text
        reused = await invitee.post(path, data={"form_token": "x", "password": GOOD_PASSWORD})
        assert reused.status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.scalar(select(User).where(User.email == "joiner@alpha.example.com"))
    assert user is not None
    assert (user.full_name, user.role) == ("Jo Iner", "end_user")
    assert "user.invitation_accepted" in await audit_actions(session_maker, tenant_a.id)


async def test_unknown_malformed_and_expired_links_show_a_clear_page(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    path = "/portal/join/" + (await invite(client, csrf)).rsplit("/", 1)[1]
    async with tenant_session(session_maker, tenant_a.id) as session:
        expired = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        await session.execute(update(Invitation).values(expires_at=expired))
        await session.commit()
    tenant_hex = tenant_a.id.hex
    for url in (path, "/portal/join/nonsense", f"/portal/join/linv_{tenant_hex}_forged", "/portal/join/" + "x" * 5000):
        for response in (await client.get(url), await client.post(url, data={"password": GOOD_PASSWORD})):
            assert response.status_code == 404, (url, response.status_code)
            assert "This invitation link does not work" in response.text


async def test_reissue_replaces_the_link_and_revoke_withdraws_it_both_audited(
    client: Client, app: Litestar, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    old = (await invite(client, csrf)).rsplit("/", 1)[1]
    async with tenant_session(session_maker, tenant_a.id) as session:
        invitation = await session.scalar(select(Invitation))
        assert invitation is not None
        await session.execute(update(Invitation).values(expires_at=invitation.expires_at - datetime.timedelta(days=3)))
        await session.commit()
    listing = await client.get("/portal/users")
    assert f"/portal/users/invitations/{invitation.id}/reissue" in listing.text
    reissued = await client.post(f"/portal/users/invitations/{invitation.id}/reissue", data={"csrf_token": csrf})
    assert reissued.status_code == 200
    assert "previous one no longer works" in reissued.text
    new = LINK.search(reissued.text)
    assert new
    new_path = "/portal/join/" + html.unescape(new[1]).rsplit("/", 1)[1]
    async with client_of(app) as invitee:
        assert (await invitee.get(f"/portal/join/{old}")).status_code == 404
        assert (await invitee.get(new_path)).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        fresh = await session.get_one(Invitation, invitation.id)
    assert fresh.expires_at > invitation.expires_at  # a fresh week, not the old remainder

    revoked = await client.post(f"/portal/users/invitations/{invitation.id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    async with client_of(app) as invitee:
        assert (await invitee.get(new_path)).status_code == 404
    assert "joiner@alpha.example.com" not in (await client.get("/portal/users")).text
    gone = await client.post(f"/portal/users/invitations/{invitation.id}/revoke", data={"csrf_token": csrf})
    assert gone.status_code == 404
    actions = await audit_actions(session_maker, tenant_a.id)
    assert {"user.invitation_reissued", "user.invitation_revoked"} <= set(actions)


async def test_an_end_user_cannot_reissue_or_revoke(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession], auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    created = await client.post("/api/auth/invitations", json={"email": "x@alpha.example.com"}, headers=admin)
    assert created.status_code == 201, created.text
    invitation_id = created.json()["id"]
    user = auth_headers(tenant_a.user)
    assert (await client.get("/api/invitations", headers=user)).status_code == 403
    assert (await client.post(f"/api/invitations/{invitation_id}/reissue", headers=user)).status_code == 403
    assert (await client.delete(f"/api/invitations/{invitation_id}", headers=user)).status_code == 403
    csrf = await sign_in(client, tenant_a, tenant_a.user.email)
    for verb in ("reissue", "revoke"):
        response = await client.post(f"/portal/users/invitations/{invitation_id}/{verb}", data={"csrf_token": csrf})
        assert response.status_code == 403
    assert await count(session_maker, tenant_a, Invitation) == 1
    assert not {"user.invitation_reissued", "user.invitation_revoked"} & set(
        await audit_actions(session_maker, tenant_a.id)
    )


async def test_the_invitations_api_lists_reissues_and_revokes(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    created = (
        await client.post("/api/auth/invitations", json={"email": "api@alpha.example.com"}, headers=admin)
    ).json()
    listed = (await client.get("/api/invitations", headers=admin)).json()
    assert [(item["id"], item["email"]) for item in listed] == [(created["id"], "api@alpha.example.com")]
    assert "token" not in listed[0]
    reissued = await client.post(f"/api/invitations/{created['id']}/reissue", headers=admin)
    assert reissued.status_code == 200
    assert reissued.json()["token"] != created["token"]
    old = await client.post("/api/auth/invitations/accept", json={"token": created["token"], "password": GOOD_PASSWORD})
    assert old.status_code == 404
    accepted = await client.post(
        "/api/auth/invitations/accept", json={"token": reissued.json()["token"], "password": GOOD_PASSWORD}
    )
    assert accepted.status_code == 201
    assert (await client.post(f"/api/invitations/{created['id']}/reissue", headers=admin)).status_code == 409
    assert (await client.delete(f"/api/invitations/{created['id']}", headers=admin)).status_code == 409
    assert (await client.get("/api/invitations", headers=admin)).json() == []
    another = (await client.post("/api/auth/invitations", json={"email": "b@alpha.example.com"}, headers=admin)).json()
    assert (await client.delete(f"/api/invitations/{another['id']}", headers=admin)).status_code == 204
    refused = await client.post(
        "/api/auth/invitations/accept", json={"token": another["token"], "password": GOOD_PASSWORD}
    )
    assert refused.status_code == 404


async def test_sign_up_page_where_the_organization_allows_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    closed = await client.get(f"/portal/signup?tenant={tenant_a.slug}")
    assert closed.status_code == 200
    assert "Sign-up is not open" in closed.text
    assert "<form" not in closed.text
    login = await client.get(f"/portal/login?tenant={tenant_a.slug}")
    assert "/portal/signup" not in login.text
    await set_policy(session_maker, tenant_a, allow_self_signup=True)
    assert f"/portal/signup?tenant={tenant_a.slug}" in (await client.get(f"/portal/login?tenant={tenant_a.slug}")).text
    users_before = await count(session_maker, tenant_a, User)

    async def sign_up(**fields: str) -> Any:
        page = await client.get(f"/portal/signup?tenant={tenant_a.slug}")
        assert "at least 12 characters" in page.text
        data = {"form_token": form_token(page.text), "tenant": tenant_a.slug, "email": "self@alpha.example.com"}
        return await client.post("/portal/signup", data=data | {"password": GOOD_PASSWORD} | fields)

    weak = await sign_up(password="qwerty123456")
    assert weak.status_code == 400
    assert "too common" in message_at(weak.text, "password")
    assert 'value="self@alpha.example.com"' in weak.text
    bad_email = await sign_up(email="not-an-address")
    assert "not a valid email address" in message_at(bad_email.text, "email")
    empty = await sign_up(email="")
    assert message_at(empty.text, "email") == "This field is required."
    taken = await sign_up(email=tenant_a.user.email)
    assert taken.status_code == 409
    assert "already has an account" in taken.text
    unknown = await sign_up(tenant="no-such-organization")
    assert "No organization" in message_at(unknown.text, "tenant")
    assert await count(session_maker, tenant_a, User) == users_before

    created = await sign_up(full_name="Self Starter")
    assert created.status_code == 303, created.text
    dashboard = await client.get("/portal/")
    assert dashboard.status_code == 200
    assert "self@alpha.example.com" in dashboard.text
    assert "user.signed_up" in await audit_actions(session_maker, tenant_a.id)


async def test_sign_up_refused_where_the_organization_does_not_allow_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    page = await client.get("/portal/signup")
    assert page.status_code == 200
    assert 'name="tenant"' in page.text  # no organization given: asked for
    data = {
        "form_token": form_token(page.text),
        "tenant": tenant_a.slug,
        "email": "self@alpha.example.com",
        "password": GOOD_PASSWORD,
    }
    refused = await client.post("/portal/signup", data=data)
    assert refused.status_code == 403
    assert "does not allow sign-up" in message_at(refused.text, "tenant")
    assert (await client.get(f"/portal/signup?tenant={'x' * 500}")).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(User).where(User.email == "self@alpha.example.com")) is None


async def test_a_link_of_a_suspended_organization_does_not_work(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(client, tenant_a, tenant_a.admin.email)
    path = "/portal/join/" + (await invite(client, csrf)).rsplit("/", 1)[1]
    page = await client.get(path)
    async with tenant_session(session_maker, tenant_a.id) as session:
        (await session.get_one(Organization, tenant_a.id)).status = "suspended"
        await session.commit()
    client.cookies.clear()
    assert (await client.get(path)).status_code == 404
    joined = await client.post(path, data={"form_token": form_token(page.text), "password": GOOD_PASSWORD})
    assert joined.status_code == 404
    assert "lyss_session" not in joined.cookies
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Invitation.accepted_at)) is None
        assert await session.scalar(select(User).where(User.email == "joiner@alpha.example.com")) is None
