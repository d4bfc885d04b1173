"""The portal's edges over HTTP: error pages for unknown addresses and methods, reloads of POST-only
addresses, one-time confirmations after a form, and the key-issued page's ready-to-run snippets."""

from __future__ import annotations

import html
import re

import msgspec
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import DEFAULT_PUBLIC_URL, Settings
from db.provider import ApiToken, Channel
from db.session import tenant_session
from tests.support.clients import Client, app_client, client_of
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.tenants import TenantRows

NOTICE = '<p class="notice ok" role="status">'


def notice_of(page: str) -> str | None:
    start = page.find(NOTICE)
    if start < 0:
        return None
    return html.unescape(page[start + len(NOTICE) : page.index("</p>", start)])


async def test_an_unknown_portal_address_is_a_page_with_the_way_back_and_the_api_keeps_json(client: Client) -> None:
    for path in ("/portal/nope", "/portal/tokens/not-an-id", "/portal/static-nope/x"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("text/html")
        assert "Page not found" in missing.text
        assert 'href="/portal/"' in missing.text
        assert 'href="/portal/login"' in missing.text
        assert '<link rel="stylesheet" href="/portal/static/portal.css">' in missing.text  # the portal's layout
        assert "unsafe-inline" not in missing.headers["content-security-policy"]
        assert missing.headers["x-frame-options"] == "DENY"
    api = await client.get("/api/nope")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/json")
    assert api.json()["status_code"] == 404


async def test_a_wrong_method_is_a_405_page_on_the_portal_and_json_on_the_api(
    client: Client, tenant_a: TenantRows
) -> None:
    await sign_in(client, tenant_a, tenant_a.admin.email)
    wrong = await client.delete("/portal/channels")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("text/html")
    assert "Not this way" in wrong.text
    assert "GET" in wrong.headers["allow"]
    assert "unsafe-inline" not in wrong.headers["content-security-policy"]
    api = await client.delete("/api/version")
    assert api.status_code == 405
    assert api.headers["content-type"].startswith("application/json")


async def test_a_page_raising_not_found_still_says_why(client: Client, tenant_a: TenantRows) -> None:
    await sign_in(client, tenant_a, tenant_a.admin.email)
    missing = await client.get("/portal/channels/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Sign in" not in missing.text  # the portal's own handler knows the viewer is signed in


async def test_reloading_a_post_only_address_goes_to_the_page_above_it(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    example = "00000000-0000-0000-0000-000000000000"
    expected = {
        "/portal/logout": "/portal/",
        f"/portal/channels/{example}/disable": f"/portal/channels/{example}",
        f"/portal/channels/{example}/test": f"/portal/channels/{example}",
        f"/portal/tokens/{example}/revoke": f"/portal/tokens/{example}",
        f"/portal/groups/{example}/members/{example}/remove": f"/portal/groups/{example}",
        "/portal/usage/export": "/portal/usage",
        "/portal/settings/policy": "/portal/settings",
    }
    for path, parent in expected.items():
        reloaded = await client.get(path)
        assert reloaded.status_code == 303, path
        assert reloaded.headers["location"] == parent, path
    # Signed in, the redirect lands on a page that loads, and the GET changed nothing.
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "keys": "k"}
    assert (await client.post("/portal/channels/new", data=base | {"name": "c", "models": "m"})).status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        channel_id = await session.scalar(select(Channel.id))
    landed = await client.get(f"/portal/channels/{channel_id}/disable", follow_redirects=True)
    assert landed.status_code == 200
    assert str(landed.url).endswith(f"/portal/channels/{channel_id}")
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(Channel.status)) == "enabled"


async def test_a_form_s_confirmation_shows_once_on_the_page_it_lands_on(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    base = {"csrf_token": token, "type": "openai-compatible", "base_url": upstream.base_url("p"), "keys": "k"}
    created = await client.post("/portal/channels/new", data=base | {"name": "c", "models": "m"}, follow_redirects=True)
    assert created.status_code == 200
    assert notice_of(created.text) == "The channel is added."
    assert notice_of((await client.get("/portal/channels")).text) is None  # a reload shows it no more
    group = await client.post(
        "/portal/groups/new", data={"csrf_token": token, "name": "lab", "description": ""}, follow_redirects=True
    )
    assert notice_of(group.text) == "The group is created."
    assert (await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "k1"})).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        key_id = await session.scalar(select(ApiToken.id))
    revoked = await client.post(f"/portal/tokens/{key_id}/revoke", data={"csrf_token": token}, follow_redirects=True)
    assert notice_of(revoked.text) == "The API key is revoked."


async def test_a_confirmation_shows_only_server_side_text_whatever_the_cookie_or_the_address_says(
    client: Client, tenant_a: TenantRows
) -> None:
    await sign_in(client, tenant_a, tenant_a.admin.email)
    injected = "<script>alert(1)</script>"
    client.cookies.set("lyss_notice", injected, path="/portal")
    forged = await client.get(f"/portal/channels?notice={injected}&saved={injected}")
    assert forged.status_code == 200
    assert notice_of(forged.text) is None
    assert "<script>alert" not in forged.text
    assert "alert(1)" not in forged.text
    client.cookies.set("lyss_notice", "channel_added", path="/portal")
    assert notice_of((await client.get("/portal/channels")).text) == "The channel is added."  # a name, not text


async def test_the_key_issued_page_has_the_base_url_and_ready_snippets_with_the_key_escaped(
    client: Client, tenant_a: TenantRows
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    issued = await client.post(
        "/portal/tokens/new", data={"csrf_token": token, "name": "k", "allowed_models": 'odd<b>"model'}
    )
    assert issued.status_code == 200
    key = re.search(r'<p class="secret" id="new-key">([^<]+)</p>', issued.text)
    assert key
    assert issued.headers["cache-control"] == "no-store"
    assert 'data-copy="new-key"' in issued.text
    base = "http://lyss.test"  # the tests' LYSS_PUBLIC_URL
    assert f'<code id="base-url">{base}/v1</code>' in issued.text
    snippets = {name: _snippet(issued.text, name) for name in ("curl", "openai", "anthropic")}
    assert f"curl {base}/v1/chat/completions" in snippets["curl"]
    assert f'-H "Authorization: Bearer {key[1]}"' in snippets["curl"]
    assert f'OpenAI(base_url="{base}/v1", api_key="{key[1]}")' in snippets["openai"]
    assert f'Anthropic(base_url="{base}", api_key="{key[1]}")' in snippets["anthropic"]
    # What the page shows is data: a model name with markup in it stays text.
    assert 'odd<b>"model' not in issued.text
    assert 'model="odd&lt;b&gt;&#34;model"' in issued.text
    assert 'model="odd<b>"model"' in snippets["openai"]


async def test_without_a_public_url_the_snippets_use_the_address_the_page_came_on(
    settings: Settings, tenant_a: TenantRows
) -> None:
    async with app_client(msgspec.structs.replace(settings, public_url=DEFAULT_PUBLIC_URL)) as client:
        token = await sign_in(client, tenant_a, tenant_a.admin.email)
        issued = await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "k"})
    assert '<code id="base-url">http://testserver.local/v1</code>' in issued.text
    assert 'OpenAI(base_url="http://testserver.local/v1"' in _snippet(issued.text, "openai")


def _snippet(page: str, name: str) -> str:
    found = re.search(rf'<pre class="snippet" id="snippet-{name}"><code>(.*?)</code></pre>', page, re.S)
    assert found, name
    return html.unescape(found[1])


async def test_the_dashboard_of_a_quiet_organization_says_what_exists_and_what_to_do_next(
    client: Client, app: Litestar, tenant_a: TenantRows
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    empty = await client.get("/portal/")
    assert 'id="getting-started"' in empty.text
    for link in ("/portal/channels/new", "/portal/tokens/new", "/portal/chat"):
        assert f'href="{link}"' in empty.text
    assert "Already here" not in empty.text
    assert (await client.post("/portal/tokens/new", data={"csrf_token": token, "name": "demo"})).status_code == 200
    with_key = await client.get("/portal/")
    assert "the API key <strong>demo</strong>" in with_key.text
    async with client_of(app) as member_client:
        await sign_in(member_client, tenant_a, tenant_a.user.email)
        member = await member_client.get("/portal/")
    assert 'href="/portal/tokens/new"' in member.text
    assert 'href="/portal/channels/new"' not in member.text  # adding channels is the administrators' work
    assert "<strong>demo</strong>" not in member.text  # the admin's key is not theirs
