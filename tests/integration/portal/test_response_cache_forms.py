"""The response cache in the portal: a key's cache mode in its form, the organization's settings on the
settings page; bad input is shown next to its field and saves nothing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import ApiToken
from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import Client
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


async def test_a_keys_response_cache_mode_in_its_form(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    assert '<option value="inherit" selected>' in (await client.get("/portal/tokens/new")).text
    base = {"csrf_token": token, "name": "cached"}
    refused = await client.post("/portal/tokens/new", data=base | {"response_cache": "sometimes"})
    assert refused.status_code == 400
    assert field_error(refused.text, "response_cache") is not None
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(ApiToken).where(ApiToken.name == "cached")) is None

    issued = await client.post("/portal/tokens/new", data=base | {"response_cache": "off"})
    assert issued.status_code == 200, issued.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        key = (await session.scalars(select(ApiToken).where(ApiToken.name == "cached"))).one()
    assert key.response_cache == "off"
    assert '<option value="off" selected>' in (await client.get(f"/portal/tokens/{key.id}")).text
    changed = await client.post(f"/portal/tokens/{key.id}", data=base | {"response_cache": "on"})
    assert changed.status_code == 303
    # A form without the field (an older page) leaves the mode as it was.
    unchanged = await client.post(f"/portal/tokens/{key.id}", data=base)
    assert unchanged.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(ApiToken, key.id)).response_cache == "on"


async def test_the_organizations_response_cache_on_the_settings_page(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    shown = (await client.get("/portal/settings/")).text
    assert 'id="response-cache"' in shown
    assert 'name="cache_ttl_seconds" type="number" value="3600"' in shown
    base = {"csrf_token": token, "cache_ttl_seconds": "600", "cache_max_entry_bytes": "4096"}
    refused = await client.post(
        "/portal/settings/response-cache",
        data=base | {"cache_enabled": "on", "cache_hit_cost_fraction": "1.5", "cache_ttl_seconds": "soon"},
    )
    assert refused.status_code == 400
    assert field_error(refused.text, "cache_hit_cost_fraction") is not None
    assert field_error(refused.text, "cache_ttl_seconds") is not None
    assert 'value="soon"' in refused.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert (await session.get_one(Organization, tenant_a.id)).settings.get("response_cache") is None

    saved = await client.post(
        "/portal/settings/response-cache",
        data=base | {"cache_enabled": "on", "cache_hit_cost_fraction": "0.1", "cache_cache_sampled": "on"},
    )
    assert saved.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = (await session.get_one(Organization, tenant_a.id)).settings["response_cache"]
    assert stored == {
        "enabled": True,
        "ttl_seconds": 600,
        "max_entry_bytes": 4096,
        "hit_cost_fraction": 0.1,
        "cache_sampled": True,
    }
    shown = (await client.get("/portal/settings/")).text
    assert 'name="cache_enabled" value="on" checked' in shown
    assert 'name="cache_hit_cost_fraction" type="text" value="0.1"' in shown
    # Unticked boxes are not sent: off.
    await client.post("/portal/settings/response-cache", data=base | {"cache_hit_cost_fraction": "0"})
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = (await session.get_one(Organization, tenant_a.id)).settings["response_cache"]
    assert (stored["enabled"], stored["cache_sampled"]) == (False, False)
