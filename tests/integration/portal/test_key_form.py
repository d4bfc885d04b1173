"""The API key form: channels and models ticked from what the key's owner may use, a choice no longer offered
kept until unticked, and the quota typed as money in the organization's currency."""

from __future__ import annotations

import re
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.provider import ApiToken
from db.session import tenant_session
from db.tenant import Organization
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def boxes(page: str, name: str) -> dict[str, tuple[str, bool]]:
    """The checkboxes named `name`: value -> (label, ticked)."""
    found = re.findall(rf'<input type="checkbox" name="{name}" value="([^"]*)"( checked)?> <span>([^<]*)</span>', page)
    return {value: (label, bool(ticked)) for value, ticked, label in found}


async def test_the_key_form_offers_the_owners_channels_and_their_models_and_keeps_stale_choices(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    headers = auth_headers(tenant_a.admin)
    shared = await add_channel(client, headers, upstream, "shared", models=["gpt-a", "gpt-b"])
    mine = await add_channel(
        client, headers, upstream, "mine", models=["solo"], scope="personal", owner_id=str(tenant_a.user.id)
    )
    admins = await add_channel(
        client, headers, upstream, "admins", models=["boss"], scope="personal", owner_id=str(tenant_a.admin.id)
    )
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    form = await client.get("/portal/tokens/new")
    channels = boxes(form.text, "allowed_channels")
    assert channels == {shared["id"]: ("shared", False), mine["id"]: ("mine", False)}  # not the admin's own
    assert admins["id"] not in form.text
    assert set(boxes(form.text, "allowed_models")) == {"gpt-a", "gpt-b", "solo"}
    assert "Quota (USD)" in form.text

    issued = await client.post(
        "/portal/tokens/new",
        data={
            "csrf_token": token,
            "name": "narrow",
            "quota": "$12.50",
            "allowed_channels": [shared["id"]],
            "allowed_models": ["gpt-a", "solo"],
        },
    )
    assert issued.status_code == 200, issued.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        key = await session.scalar(select(ApiToken).where(ApiToken.name == "narrow"))
        assert key is not None
        assert (key.quota, key.allowed_channels, key.allowed_models) == (12_500_000, [shared["id"]], ["gpt-a", "solo"])
        # A model no channel serves any more (as after a channel's models changed).
        await session.execute(update(ApiToken).where(ApiToken.id == key.id).values(allowed_models=["gpt-a", "gone"]))
        await session.commit()

    edit = await client.get(f"/portal/tokens/{key.id}")
    assert 'id="quota" name="quota" type="text" value="$12.50"' in edit.text
    assert boxes(edit.text, "allowed_channels")[shared["id"]] == ("shared", True)
    models = boxes(edit.text, "allowed_models")
    assert models["gone"] == ("gone (no longer served)", True)
    assert models["gpt-a"] == ("gpt-a", True)
    assert models["solo"] == ("solo", False)

    # Unticking the stale model removes it; an empty quota is unlimited.
    saved = await client.post(
        f"/portal/tokens/{key.id}",
        data={"csrf_token": token, "name": "narrow", "quota": "", "allowed_models": ["gpt-a"]},
    )
    assert saved.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(ApiToken, key.id)
        assert (stored.quota, stored.allowed_models, stored.allowed_channels) == (-1, ["gpt-a"], [])


async def test_the_quota_is_money_in_the_organizations_currency_and_bad_input_names_its_field(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(update(Organization).where(Organization.id == tenant_a.id).values(currency="EUR"))
        await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert "Quota (EUR)" in (await client.get("/portal/tokens/new")).text
    base = {"csrf_token": token, "name": "k", "budget_period": "monthly"}
    for quota, message in [
        ("lots", "&#39;lots&#39; is not an amount of money; write it like 1.23."),
        ("-5", "An amount of money cannot be negative."),
        ("0.0000001", "Amounts go down to a millionth of the currency (0.000001), no further."),
    ]:
        refused = await client.post("/portal/tokens/new", data=base | {"quota": quota, "rpm_limit": "fast"})
        assert refused.status_code == 400
        assert field_error(refused.text, "quota") == message
        assert field_error(refused.text, "rpm_limit") == "Enter a whole number."  # every wrong field at once
    unknown = await client.post("/portal/tokens/new", data=base | {"allowed_channels": ["not-an-id", str(UUID(int=7))]})
    assert field_error(unknown.text, "allowed_channels") == "Choose one of the listed options."
    gone = await client.post("/portal/tokens/new", data=base | {"allowed_channels": [str(UUID(int=7))]})
    assert gone.status_code == 400
    assert "no channel of this organization" in (field_error(gone.text, "allowed_channels") or "")
    assert 'value="00000000-0000-0000-0000-000000000007" checked' in gone.text
    assert "(no longer available)" in gone.text
    ok = await client.post("/portal/tokens/new", data=base | {"quota": "€1,000.25"})
    assert ok.status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(ApiToken.quota).where(ApiToken.name == "k"))) == [1_000_250_000]
        key_id = await session.scalar(select(ApiToken.id).where(ApiToken.name == "k"))
    assert 'value="€1,000.25"' in (await client.get(f"/portal/tokens/{key_id}")).text
    assert "€1,000.25 / month" in (await client.get("/portal/tokens")).text
