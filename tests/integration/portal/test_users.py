"""The portal's Users and Groups pages over HTTP: invitations, roles, deactivation, MFA reset, groups, isolation."""

from __future__ import annotations

import datetime
import html
import re
from typing import Any

import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.settings import Settings
from db.auth import Invitation, RecoveryCode, User, UserSession
from db.provider import UsageLog
from db.session import tenant_session
from db.tenant import UserGroup, UserGroupMember
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.gateway import add_channel, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows, audit_actions, audit_events
from tests.support.usage_rows import add_usage

# The token is the link's last segment.
INVITATION_TOKEN = re.compile(r'id="invitation-link">[^<]*/portal/join/([^<]+)<')


def message_at(page: str, field: str) -> str:
    """The error shown next to `field`, as the reader sees it."""
    return html.unescape(field_error(page, field) or "")


def form_error(page: str) -> str:
    """The error about the whole form, shown above it."""
    found = re.search(r'<p class="notice error" role="alert">([^<]*)</p>', page)
    return html.unescape(found[1]) if found else ""


async def stored_user(session_maker: async_sessionmaker[AsyncSession], user: User) -> User:
    async with tenant_session(session_maker, user.tenant_id) as session:
        return await session.get_one(User, user.id)


async def test_admin_invites_a_user_and_the_token_is_shown_only_once(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert (await client.get("/portal/users/invite")).status_code == 200
    created = await client.post(
        "/portal/users/invite",
        data={"csrf_token": token, "email": " New.Person@Alpha.example.com ", "role": "end_user"},
    )
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    invitation_token = INVITATION_TOKEN.search(created.text)
    assert invitation_token
    assert "expires" in created.text
    listing = await client.get("/portal/users")
    assert "new.person@alpha.example.com" in listing.text  # pending
    assert invitation_token[1] not in listing.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        invitation = await session.scalar(select(Invitation))
    assert invitation is not None
    assert (invitation.email, invitation.role) == ("new.person@alpha.example.com", "end_user")
    assert invitation_token[1] not in invitation.token_hash
    # The token shown is the real one: the invitee can accept it.
    accepted = await client.post(
        "/api/auth/invitations/accept",
        json={"token": invitation_token[1], "password": "a long and unusual passphrase 42"},
    )
    assert accepted.status_code == 201, accepted.text
    assert any(event.action == "user.invited" for event in await audit_events(session_maker, tenant_a.id))


async def test_invitation_form_errors_sit_next_to_the_field_and_nothing_is_saved(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)

    async def invite(email: str, role: str = "end_user") -> Any:
        return await client.post("/portal/users/invite", data={"csrf_token": token, "email": email, "role": role})

    empty = await invite("")
    assert empty.status_code == 400
    assert message_at(empty.text, "email") == "This field is required."
    too_long = await invite("a" * 250 + "@example.com")
    assert too_long.status_code == 400
    assert message_at(too_long.text, "email") == "At most 255 characters."
    not_an_address = await invite("not-an-address")
    assert not_an_address.status_code == 400
    assert "not a valid email address" in message_at(not_an_address.text, "email")
    assert 'value="not-an-address"' in not_an_address.text  # kept
    wrong_role = await invite("someone@alpha.example.com", role="super_admin")
    assert wrong_role.status_code == 400
    assert message_at(wrong_role.text, "role") == "'super_admin' is not one of the choices."
    assert 'value="someone@alpha.example.com"' in wrong_role.text
    existing = await invite(tenant_a.user.email)
    assert existing.status_code == 409
    assert "already has an account" in message_at(existing.text, "email")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Invitation)) == 0


async def test_users_list_shows_this_months_usage_per_user_and_links_to_the_log(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    last_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - datetime.timedelta(days=1)
    async with tenant_session(session_maker, tenant_a.id) as session:
        await add_usage(
            session,
            [
                UsageLog(user_id=tenant_a.user.id, endpoint="chat", model="m", cost=1200, created_at=now),
                UsageLog(user_id=tenant_a.user.id, endpoint="chat", model="m", cost=34, created_at=now),
                UsageLog(user_id=tenant_a.user.id, endpoint="chat", model="m", cost=99999, created_at=last_month),
                UsageLog(user_id=tenant_a.admin.id, endpoint="chat", model="m", cost=7, created_at=now),
            ],
        )
        await session.commit()
    await sign_in(client, tenant_a, tenant_a.admin.email)
    listing = await client.get("/portal/users")
    assert listing.status_code == 200

    def row_of(user: User) -> list[str]:
        row = re.search(rf'<tr id="user-{user.id}">(.*?)</tr>', listing.text, re.S)
        assert row, listing.text
        return re.findall(r'<td class="num">([^<]*)</td>', row[1])

    assert row_of(tenant_a.user) == ["2", "$0.001234"]  # last month's call is not counted
    assert row_of(tenant_a.admin) == ["1", "$0.000007"]
    assert f'href="/portal/usage?user_id={tenant_a.user.id}"' in listing.text
    assert f'href="/portal/users/{tenant_a.user.id}"' in listing.text


async def test_admin_changes_a_role_and_a_demotion_ends_the_sessions(
    client: Client, settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    role_path = f"/portal/users/{tenant_a.user.id}/role"
    promoted = await client.post(role_path, data={"csrf_token": token, "role": "tenant_admin"})
    assert promoted.status_code == 303
    assert (await stored_user(session_maker, tenant_a.user)).role == "tenant_admin"
    async with app_client(settings) as other_browser:
        await sign_in(other_browser, tenant_a, tenant_a.user.email)
        assert (await other_browser.get("/portal/users")).status_code == 200  # now an admin
        demoted = await client.post(role_path, data={"csrf_token": token, "role": "end_user"})
        assert demoted.status_code == 303
        signed_out = await other_browser.get("/portal/")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/portal/login")
    assert (await stored_user(session_maker, tenant_a.user)).role == "end_user"
    changes = [event for event in await audit_events(session_maker, tenant_a.id) if event.action == "user.role_changed"]
    assert [(event.details["old_role"], event.details["role"]) for event in changes] == [
        ("end_user", "tenant_admin"),
        ("tenant_admin", "end_user"),
    ]
    assert {event.actor_user_id for event in changes} == {tenant_a.admin.id}
    assert {event.target_id for event in changes} == {str(tenant_a.user.id)}

    wrong = await client.post(role_path, data={"csrf_token": token, "role": "owner"})
    assert wrong.status_code == 400
    assert message_at(wrong.text, "role") == "'owner' is not one of the choices."
    empty = await client.post(role_path, data={"csrf_token": token, "role": ""})
    assert empty.status_code == 400
    assert message_at(empty.text, "role") == "This field is required."
    assert (await stored_user(session_maker, tenant_a.user)).role == "end_user"


async def test_an_admin_cannot_demote_deactivate_or_reset_themselves(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    own = f"/portal/users/{tenant_a.admin.id}"
    demote = await client.post(f"{own}/role", data={"csrf_token": token, "role": "end_user"})
    assert demote.status_code == 403
    assert "cannot remove your own administrator role" in message_at(demote.text, "role")
    deactivate = await client.post(f"{own}/deactivate", data={"csrf_token": token})
    assert deactivate.status_code == 403
    assert "cannot deactivate your own account" in form_error(deactivate.text)
    reset = await client.post(f"{own}/reset-mfa", data={"csrf_token": token})
    assert reset.status_code == 403
    assert "cannot reset your own" in form_error(reset.text)
    admin = await stored_user(session_maker, tenant_a.admin)
    assert (admin.role, admin.status) == ("tenant_admin", "active")
    assert (await client.get("/portal/users")).status_code == 200  # still signed in, still an admin


async def test_a_refusal_about_the_whole_account_shows_above_the_form_not_under_the_role(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(User).where(User.id == tenant_a.user.id).values(role="super_admin"))
        await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    refused = await client.post(
        f"/portal/users/{tenant_a.user.id}/role", data={"csrf_token": token, "role": "end_user"}
    )
    assert refused.status_code == 403
    assert form_error(refused.text) == "Only a platform super admin can change a super admin's account."
    assert field_error(refused.text, "role") is None
    assert (await stored_user(session_maker, tenant_a.user)).role == "super_admin"


async def test_deactivating_a_user_signs_them_out_at_once_and_reactivating_lets_them_sign_in_again(
    client: Client, settings: Settings, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    user_page = f"/portal/users/{tenant_a.user.id}"
    async with app_client(settings) as users_browser:
        await sign_in(users_browser, tenant_a, tenant_a.user.email)
        assert (await users_browser.get("/portal/")).status_code == 200
        deactivated = await client.post(f"{user_page}/deactivate", data={"csrf_token": token})
        assert deactivated.status_code == 303
        signed_out = await users_browser.get("/portal/")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/portal/login")
        assert (await stored_user(session_maker, tenant_a.user)).status == "inactive"
        again = await client.post(f"{user_page}/deactivate", data={"csrf_token": token})
        assert again.status_code == 409
        assert "already deactivated" in form_error(again.text)

        reactivated = await client.post(f"{user_page}/reactivate", data={"csrf_token": token})
        assert reactivated.status_code == 303
        assert (await stored_user(session_maker, tenant_a.user)).status == "active"
        # The ended session stays ended; signing in again works.
        assert (await users_browser.get("/portal/")).status_code == 303
        await sign_in(users_browser, tenant_a, tenant_a.user.email)
    async with tenant_session(session_maker, tenant_a.id) as session:
        reasons = list(
            await session.scalars(select(UserSession.ended_reason).where(UserSession.user_id == tenant_a.user.id))
        )
    assert "user_deactivated" in reasons
    actions = await audit_actions(session_maker, tenant_a.id)
    assert actions.index("user.deactivated") < actions.index("user.reactivated")


async def test_deactivating_a_user_stops_their_api_keys_at_once_despite_the_gateway_cache(
    settings: Settings, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    cached = msgspec.structs.replace(settings, gateway_cache_seconds=300.0)
    async with app_client(cached) as client:
        key, _ = await issue_key(client, auth_headers(tenant_a.user))
        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200  # now cached as usable
        token = await sign_in(client, tenant_a, tenant_a.admin.email)
        await client.post(f"/portal/users/{tenant_a.user.id}/deactivate", data={"csrf_token": token})
        refused = await client.get("/v1/models", headers=bearer(key))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        await client.post(f"/portal/users/{tenant_a.user.id}/reactivate", data={"csrf_token": token})
        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200


async def test_admin_resets_the_mfa_of_a_user_who_lost_their_device(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        user = await session.get_one(User, tenant_a.user.id)
        user.mfa_enabled = True
        user.mfa_secret = "encrypted-secret-placeholder"
        user.mfa_last_used_step = 123
        session.add_all(RecoveryCode(user_id=user.id, code_hash=f"{index:064x}") for index in range(3))
        await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    user_page = f"/portal/users/{tenant_a.user.id}"
    assert 'id="user-mfa">on<' in (await client.get(user_page)).text
    reset = await client.post(f"{user_page}/reset-mfa", data={"csrf_token": token})
    assert reset.status_code == 303
    assert 'id="user-mfa">off<' in (await client.get(user_page)).text
    stored = await stored_user(session_maker, tenant_a.user)
    assert (stored.mfa_enabled, stored.mfa_secret, stored.mfa_last_used_step) == (False, None, None)
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(RecoveryCode)) == 0
    [event] = [event for event in await audit_events(session_maker, tenant_a.id) if event.action == "mfa.reset"]
    assert (event.actor, event.actor_user_id) == (tenant_a.admin.email, tenant_a.admin.id)
    assert event.target_id == str(tenant_a.user.id)
    assert event.details["recovery_codes_deleted"] == 3
    again = await client.post(f"{user_page}/reset-mfa", data={"csrf_token": token})
    assert again.status_code == 409
    assert "no two-factor authentication to reset" in form_error(again.text)


def _people_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every Users and Groups page, so that a page added later is checked too."""
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith(("/portal/users", "/portal/groups"))
        for handler in route.route_handlers
        for method in handler.http_methods
        if method in ("GET", "POST")
    )


def _concrete(path: str, tenant: TenantRows) -> str:
    # No invitation is among a tenant's rows here: any id reaches the handler (the role is checked before the
    # row; tests/integration/tenants/test_cross_tenant_routes.py tries another tenant's real invitation).
    return (
        path.replace("{user_id:uuid}", str(tenant.admin.id))
        .replace("{group_id:uuid}", str(tenant.group.id))
        .replace("{invitation_id:uuid}", str(uuid7()))
    )


async def test_every_users_and_groups_page_opens_for_an_admin_with_nothing_inline(
    client: Client, app: Litestar, tenant_a: TenantRows
) -> None:
    await sign_in(client, tenant_a, tenant_a.admin.email)
    pages = [path for method, path in _people_routes(app) if method == "GET"]
    assert len(pages) >= 6
    for path in pages:
        response = await client.get(_concrete(path, tenant_a))
        assert response.status_code == 200, path
        assert " style=" not in response.text, path  # the CSP allows no inline style or script
        assert "<script>" not in response.text, path
    menu = (await client.get("/portal/")).text
    assert 'href="/portal/users"' in menu
    assert 'href="/portal/groups"' in menu


async def test_an_end_user_gets_403_on_every_users_and_groups_page_and_post(
    client: Client, app: Litestar, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    routes = _people_routes(app)
    assert len(routes) >= 16
    for method, path in routes:
        url = _concrete(path, tenant_a)
        if method == "GET":
            response = await client.get(url)
        else:
            data = {"csrf_token": token, "role": "end_user", "name": "taken over", "user_id": str(tenant_a.user.id)}
            response = await client.post(url, data=data)
        assert response.status_code == 403, (method, path, response.status_code)
    dashboard = (await client.get("/portal/")).text
    assert 'href="/portal/users"' not in dashboard
    assert 'href="/portal/groups"' not in dashboard
    admin = await stored_user(session_maker, tenant_a.admin)
    assert (admin.role, admin.status) == ("tenant_admin", "active")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(UserGroup.name))) == ["engineering"]
        assert await session.scalar(select(func.count()).select_from(UserGroupMember)) == 0


async def test_another_tenants_admin_gets_404_for_these_users_and_groups(
    client: Client,
    app: Litestar,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    token = await sign_in(client, tenant_b, tenant_b.admin.email)
    for method, path in _people_routes(app):
        if "{" not in path:
            continue
        url = _concrete(path, tenant_a)
        if method == "GET":
            response = await client.get(url)
        else:
            response = await client.post(url, data={"csrf_token": token, "role": "end_user", "name": "taken"})
        assert response.status_code == 404, (method, path, response.status_code)
    # Naming A's user as a member of B's own group: not found either, shown next to the field.
    foreign_member = await client.post(
        f"/portal/groups/{tenant_b.group.id}/members", data={"csrf_token": token, "user_id": str(tenant_a.user.id)}
    )
    assert foreign_member.status_code == 404
    assert message_at(foreign_member.text, "user_id") == "No such user in this organization."
    listing = (await client.get("/portal/users")).text
    assert tenant_a.user.email not in listing
    assert tenant_b.user.email in listing
    admin = await stored_user(session_maker, tenant_a.admin)
    assert (admin.role, admin.status) == ("tenant_admin", "active")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(UserGroup.name))) == ["engineering"]
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.scalar(select(func.count()).select_from(UserGroupMember)) == 0


async def test_groups_are_created_renamed_given_members_and_deleted(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    created = await client.post(
        "/portal/groups/new", data={"csrf_token": token, "name": " research ", "description": "Lab people"}
    )
    assert created.status_code == 303
    group_path = created.headers["location"]
    assert re.fullmatch(r"/portal/groups/[0-9a-f-]{36}", group_path)
    listing = (await client.get("/portal/groups")).text
    assert "research" in listing
    assert "Lab people" in listing

    duplicate = await client.post(
        "/portal/groups/new", data={"csrf_token": token, "name": "engineering", "description": "kept"}
    )
    assert duplicate.status_code == 409
    assert message_at(duplicate.text, "name") == "A group named 'engineering' already exists; choose another name."
    assert ">kept</textarea>" in duplicate.text
    renamed_to_taken = await client.post(group_path, data={"csrf_token": token, "name": "engineering"})
    assert renamed_to_taken.status_code == 409
    assert "already exists" in message_at(renamed_to_taken.text, "name")
    renamed = await client.post(group_path, data={"csrf_token": token, "name": "science", "description": ""})
    assert renamed.status_code == 303

    added = await client.post(f"{group_path}/members", data={"csrf_token": token, "user_id": str(tenant_a.user.id)})
    assert added.status_code == 303
    page = (await client.get(group_path)).text
    assert f'id="member-{tenant_a.user.id}"' in page
    twice = await client.post(f"{group_path}/members", data={"csrf_token": token, "user_id": str(tenant_a.user.id)})
    assert twice.status_code == 409
    assert "already a member" in message_at(twice.text, "user_id")
    async with tenant_session(session_maker, tenant_a.id) as session:
        group = await session.scalar(select(UserGroup).where(UserGroup.name == "science"))
        assert group is not None
        assert group.description is None
        members = list(
            await session.scalars(select(UserGroupMember.user_id).where(UserGroupMember.group_id == group.id))
        )
    assert members == [tenant_a.user.id]

    removed = await client.post(f"{group_path}/members/{tenant_a.user.id}/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    assert f'id="member-{tenant_a.user.id}"' not in (await client.get(group_path)).text
    not_a_member = await client.post(f"{group_path}/members/{tenant_a.user.id}/remove", data={"csrf_token": token})
    assert not_a_member.status_code == 404
    deleted = await client.post(f"{group_path}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert (await client.get(group_path)).status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(UserGroup.name))) == ["engineering"]
    actions = await audit_actions(session_maker, tenant_a.id)
    for action in ("group.created", "group.updated", "group.member_added", "group.member_removed", "group.deleted"):
        assert action in actions


async def test_group_forms_refuse_bad_input_keep_it_and_save_nothing(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    empty = await client.post("/portal/groups/new", data={"csrf_token": token, "name": "   ", "description": "x"})
    assert empty.status_code == 400
    assert message_at(empty.text, "name") == "This field is required."
    too_long = await client.post(
        "/portal/groups/new", data={"csrf_token": token, "name": "n" * 101, "description": "d" * 1001}
    )
    assert too_long.status_code == 400
    assert message_at(too_long.text, "name") == "At most 100 characters."
    assert message_at(too_long.text, "description") == "At most 1000 characters."
    assert "n" * 101 in too_long.text  # kept
    group_path = f"/portal/groups/{tenant_a.group.id}"
    blank_rename = await client.post(group_path, data={"csrf_token": token, "name": ""})
    assert blank_rename.status_code == 400
    assert message_at(blank_rename.text, "name") == "This field is required."
    not_an_id = await client.post(f"{group_path}/members", data={"csrf_token": token, "user_id": "someone"})
    assert not_an_id.status_code == 400
    assert message_at(not_an_id.text, "user_id") == "Choose one of the listed options."
    no_member = await client.post(f"{group_path}/members", data={"csrf_token": token, "user_id": ""})
    assert no_member.status_code == 400
    assert message_at(no_member.text, "user_id") == "This field is required."
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(UserGroup.name))) == ["engineering"]
        assert await session.scalar(select(func.count()).select_from(UserGroupMember)) == 0


async def test_a_group_that_channels_serve_cannot_be_deleted(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_channel(
        client, auth_headers(tenant_a.admin), upstream, "team-only", scope="group", group_id=str(tenant_a.group.id)
    )
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    refused = await client.post(f"/portal/groups/{tenant_a.group.id}/delete", data={"csrf_token": token})
    assert refused.status_code == 409
    assert "team-only" in form_error(refused.text)
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.get(UserGroup, tenant_a.group.id) is not None
