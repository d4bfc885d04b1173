"""The management API's channel scope changes (`PATCH /api/channels/{id}`) and clones (`keys_from`)."""

from __future__ import annotations

from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def test_a_patch_moves_a_channel_between_scopes_and_refuses_a_scope_without_its_group_or_owner(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.admin)
    channel = await add_channel(client, headers, upstream, "moving")
    path = f"/api/channels/{channel['id']}"
    no_group = await client.patch(path, json={"scope": "group"}, headers=headers)
    assert (no_group.status_code, no_group.json()["detail"][:32]) == (400, "A group channel needs the group_")
    foreign = await client.patch(path, json={"scope": "group", "group_id": str(tenant_b.group.id)}, headers=headers)
    assert foreign.status_code == 400
    for body in ({"scope": "everyone"}, {"owner_id": "me"}):
        assert (await client.patch(path, json=body, headers=headers)).status_code == 400
    grouped = await client.patch(path, json={"scope": "group", "group_id": str(tenant_a.group.id)}, headers=headers)
    assert (grouped.json()["scope"], grouped.json()["group_id"]) == ("group", str(tenant_a.group.id))
    renamed = await client.patch(path, json={"name": "still grouped"}, headers=headers)
    assert renamed.json()["group_id"] == str(tenant_a.group.id)  # a change without scope keeps it
    personal = await client.patch(path, json={"scope": "personal", "owner_id": str(tenant_a.user.id)}, headers=headers)
    assert (personal.json()["scope"], personal.json()["owner_id"], personal.json()["group_id"]) == (
        "personal",
        str(tenant_a.user.id),
        None,
    )
    back = await client.patch(path, json={"scope": "tenant"}, headers=headers)
    assert (back.json()["scope"], back.json()["owner_id"]) == ("tenant", None)


async def test_a_clone_through_the_api_takes_the_source_keys_only_from_this_organization(
    client: Client, upstream: MockUpstream, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers(tenant_a.admin)
    source = await add_channel(client, headers, upstream, "source", keys=["k1", "k2"])
    body = {"name": "copy", "type": "openai-compatible", "models": ["m"], "base_url": upstream.base_url("copy")}
    copied = await client.post("/api/channels", json=body | {"keys_from": source["id"]}, headers=headers)
    assert (copied.status_code, copied.json()["key_count"]) == (201, 2)
    theirs = await add_channel(client, auth_headers(tenant_b.admin), upstream, "theirs")
    stolen = await client.post(
        "/api/channels", json=body | {"name": "stolen", "keys_from": theirs["id"]}, headers=headers
    )
    assert stolen.status_code == 404
    assert "keys_from" in stolen.json()["detail"]
    bad = await client.post("/api/channels", json=body | {"name": "bad", "keys_from": "nope"}, headers=headers)
    assert bad.status_code == 400
