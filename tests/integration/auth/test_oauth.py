"""OAuth/OIDC sign-in end to end against a real OpenID provider on loopback (tests/support/oidc_provider.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.auth import OAuthConnection
from db.session import tenant_session
from tests.support.auth import code_of_next_step, enrol, login, set_policy, start_oauth, through_provider
from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.oidc_provider import MockOidcProvider
from tests.support.tenants import TenantRows, audit_actions


@pytest.fixture
async def corp(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, auth_headers: AuthHeaders
) -> dict[str, Any]:
    """Tenant A's OIDC provider "corp", added through the admin API."""
    response = await client.post(
        "/api/auth/oauth-providers",
        json={
            "name": "corp",
            "kind": "oidc",
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "discovery_url": idp.discovery_url,
            "display_name": "Corp SSO",
        },
        headers=auth_headers(tenant_a.admin),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert "client_secret" not in body
    assert body["redirect_uri"] == "http://lyss.test/api/auth/oauth/callback"
    return body


async def test_oidc_login_links_by_verified_email_with_state_nonce_and_pkce(
    client: Client,
    tenant_a: TenantRows,
    idp: MockOidcProvider,
    corp: dict[str, Any],
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    idp.user["email"] = tenant_a.user.email
    url = await start_oauth(client, tenant_a)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{idp.issuer}/authorize?")
    assert query["code_challenge_method"] == ["S256"]
    assert {"state", "nonce", "code_challenge"} <= set(query)
    assert query["redirect_uri"] == [corp["redirect_uri"]]

    response = await through_provider(client, url)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["status"] == "authenticated"
    assert (await client.get("/api/me", headers=bearer(tokens["access_token"]))).json()["id"] == str(tenant_a.user.id)
    assert len(idp.token_requests[0]["code_verifier"]) >= 43  # the provider checked it against the challenge

    # The second time the link itself is used, whatever the email says now.
    idp.user["email"] = "renamed@elsewhere.example.com"
    again = await through_provider(client, await start_oauth(client, tenant_a))
    me = await client.get("/api/me", headers=bearer(again.json()["access_token"]))
    assert me.json()["id"] == str(tenant_a.user.id)
    async with tenant_session(session_maker, tenant_a.id) as session:
        links = (await session.scalars(select(OAuthConnection))).all()
    assert [(link.user_id, link.external_id) for link in links] == [(tenant_a.user.id, "idp-user-1")]
    assert (await audit_actions(session_maker, tenant_a.id)).count("oauth.linked") == 1


async def test_a_forged_or_replayed_state_is_refused(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, corp: dict[str, Any]
) -> None:
    idp.user["email"] = tenant_a.user.email
    url = await start_oauth(client, tenant_a)
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(url)
    back = urlsplit(at_provider.headers["location"])
    code = parse_qs(back.query)["code"][0]
    forged = await client.get("/api/auth/oauth/callback", params={"code": code, "state": "made-up-state"})
    assert forged.status_code == 400
    assert "start the sign-in again" in forged.json()["detail"]
    first = await client.get(f"{back.path}?{back.query}")
    assert first.status_code == 200
    replayed = await client.get(f"{back.path}?{back.query}")
    assert replayed.status_code == 400


@pytest.mark.parametrize(
    ("misbehaviour", "message"),
    [
        ("wrong_nonce", "The id_token is not valid for this sign-in"),
        ("foreign_key", "signature does not verify"),
        ("expired_code", "The provider refused the sign-in (invalid_grant)"),
    ],
)
async def test_a_bad_answer_from_the_provider_is_refused(
    client: Client,
    tenant_a: TenantRows,
    idp: MockOidcProvider,
    corp: dict[str, Any],
    misbehaviour: str,
    message: str,
) -> None:
    idp.user["email"] = tenant_a.user.email
    if misbehaviour == "wrong_nonce":
        idp.nonce_override = "a-nonce-from-another-sign-in"
    elif misbehaviour == "foreign_key":
        idp.sign_with_rogue_key = True
    else:
        idp.code_lifetime_seconds = -1
    response = await through_provider(client, await start_oauth(client, tenant_a))
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert "access_token" not in response.text


async def test_no_account_no_sign_in_unless_the_tenant_allows_sign_up(
    client: Client,
    tenant_a: TenantRows,
    idp: MockOidcProvider,
    corp: dict[str, Any],
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    idp.user["email"] = "stranger@example.com"
    refused = await through_provider(client, await start_oauth(client, tenant_a))
    assert refused.status_code == 403
    await set_policy(session_maker, tenant_a, allow_self_signup=True)
    created = await through_provider(client, await start_oauth(client, tenant_a))
    assert created.status_code == 200
    me = (await client.get("/api/me", headers=bearer(created.json()["access_token"]))).json()
    assert (me["email"], me["role"]) == ("stranger@example.com", "end_user")


async def test_an_unverified_email_never_links_to_an_existing_account(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, corp: dict[str, Any]
) -> None:
    idp.user.update(email=tenant_a.admin.email, email_verified=False)
    response = await through_provider(client, await start_oauth(client, tenant_a))
    assert response.status_code == 403


async def test_explicit_link_then_sign_in(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, corp: dict[str, Any], auth_headers: AuthHeaders
) -> None:
    idp.user["email"] = "personal-address@example.com"  # matches nobody: only an explicit link can connect it
    started = await client.post("/api/auth/oauth-links", json={"provider": "corp"}, headers=auth_headers(tenant_a.user))
    linked = await through_provider(client, started.json()["authorization_url"])
    assert linked.json() == {"status": "linked", "provider": "corp"}
    links = (await client.get("/api/auth/oauth-links", headers=auth_headers(tenant_a.user))).json()
    assert [link["provider"] for link in links] == ["corp"]

    signed_in = await through_provider(client, await start_oauth(client, tenant_a))
    me = await client.get("/api/me", headers=bearer(signed_in.json()["access_token"]))
    assert me.json()["id"] == str(tenant_a.user.id)

    other = await client.post("/api/auth/oauth-links", json={"provider": "corp"}, headers=auth_headers(tenant_a.admin))
    stolen = await through_provider(client, other.json()["authorization_url"])
    assert stolen.status_code == 409  # one external account, one user


async def test_portal_mode_sets_the_cookie_and_redirects_only_within_the_site(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, corp: dict[str, Any]
) -> None:
    idp.user["email"] = tenant_a.user.email
    response = await through_provider(
        client, await start_oauth(client, tenant_a, mode="portal", return_to="https://evil.example.com/")
    )
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"] == "/"
    assert "httponly" in response.headers["set-cookie"].lower()
    assert (await client.get("/api/me")).json()["email"] == tenant_a.user.email


async def test_oauth_sign_in_still_asks_for_the_second_factor(
    client: Client, tenant_a: TenantRows, idp: MockOidcProvider, corp: dict[str, Any]
) -> None:
    tokens = (await login(client, tenant_a, tenant_a.user.email)).json()
    totp, _ = await enrol(client, tokens)
    idp.user["email"] = tenant_a.user.email
    response = await through_provider(client, await start_oauth(client, tenant_a))
    assert response.json()["status"] == "mfa_required"
    done = await client.post(
        "/api/auth/login/mfa", json={"mfa_ticket": response.json()["mfa_ticket"], "code": code_of_next_step(totp)}
    )
    assert done.json()["status"] == "authenticated"


async def test_providers_are_per_tenant(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, corp: dict[str, Any], auth_headers: AuthHeaders
) -> None:
    public_a = (await client.get(f"/api/auth/tenants/{tenant_a.slug}/oauth-providers")).json()
    public_b = (await client.get(f"/api/auth/tenants/{tenant_b.slug}/oauth-providers")).json()
    assert "corp" in [provider["name"] for provider in public_a]
    assert "corp" not in [provider["name"] for provider in public_b]
    through_b = await client.get(f"/api/auth/tenants/{tenant_b.slug}/oauth/corp/authorize", follow_redirects=False)
    assert through_b.status_code == 404
    as_b_admin = await client.patch(
        f"/api/auth/oauth-providers/{corp['id']}", json={"is_enabled": False}, headers=auth_headers(tenant_b.admin)
    )
    assert as_b_admin.status_code == 404


async def test_an_invitee_joins_through_the_provider_only_as_the_invited_address(
    client: Client,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    idp: MockOidcProvider,
    corp: dict[str, Any],
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    invited = await client.post(
        "/api/auth/invitations",
        json={"email": "newcomer@alpha.example.com", "role": "tenant_admin"},
        headers=auth_headers(tenant_a.admin),
    )
    assert invited.status_code == 201, invited.text
    token = invited.json()["token"]
    join_page = await client.get(f"/portal/join/{token}")
    assert "Corp SSO" in join_page.text
    assert "invitation=" in join_page.text

    # Another tenant's slug, or a made-up token, cannot start it.
    assert (
        await client.get(f"/api/auth/tenants/{tenant_b.slug}/oauth/corp/authorize", params={"invitation": token})
    ).status_code == 404
    assert (
        await client.get(f"/api/auth/tenants/{tenant_a.slug}/oauth/corp/authorize", params={"invitation": "linv_nope"})
    ).status_code == 404

    # The provider vouches for another address: refused, and the invitation still stands.
    # The browser is sent back to the sign-in page, which says why (once: the address holds only a key).
    idp.user["email"] = "someone-else@alpha.example.com"
    wrong = await through_provider(client, await start_oauth(client, tenant_a, mode="portal", invitation=token))
    assert wrong.status_code in (302, 303, 307), wrong.text
    assert wrong.headers["location"].startswith(f"/portal/login?tenant={tenant_a.slug}&refused=")
    sign_in_page = await client.get(wrong.headers["location"])
    assert "This invitation is for newcomer@alpha.example.com" in sign_in_page.text
    assert "This invitation is for" not in (await client.get(wrong.headers["location"])).text
    forged = await client.get("/portal/login", params={"tenant": tenant_a.slug, "refused": "Your account is locked"})
    assert forged.status_code == 200
    assert "Your account is locked" not in forged.text
    # An address the provider does not vouch for is no better; through the API the refusal is a 403.
    idp.user.update(email="newcomer@alpha.example.com", email_verified=False)
    unverified = await through_provider(client, await start_oauth(client, tenant_a, mode="api", invitation=token))
    assert unverified.status_code == 403

    idp.user["email_verified"] = True
    joined = await through_provider(client, await start_oauth(client, tenant_a, mode="portal", invitation=token))
    assert joined.status_code in (302, 303, 307), joined.text
    me = (await client.get("/api/me")).json()
    assert (me["email"], me["role"]) == ("newcomer@alpha.example.com", "tenant_admin")
    assert "user.invitation_accepted" in await audit_actions(session_maker, tenant_a.id)
    async with tenant_session(session_maker, tenant_a.id) as session:
        linked = await session.scalar(
            select(OAuthConnection.user_id).where(OAuthConnection.external_email == me["email"])
        )
    assert str(linked) == me["id"]

    # Used once: the link and the provider route are both closed now.
    assert (await client.get(f"/portal/join/{token}")).status_code == 404
    assert (
        await client.get(f"/api/auth/tenants/{tenant_a.slug}/oauth/corp/authorize", params={"invitation": token})
    ).status_code == 404
