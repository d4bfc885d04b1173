"""The API twins of the portal's Users, Groups and Audit pages: the same services, the same effects, JSON."""

from __future__ import annotations

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, chat_body, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


async def test_an_admin_manages_accounts_through_the_api_with_the_portals_effects(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    listed = (await client.get("/api/users", headers=admin)).json()
    assert {user["email"] for user in listed} == {tenant_a.admin.email, tenant_a.user.email}
    user_path = f"/api/users/{tenant_a.user.id}"
    detail = (await client.get(user_path, headers=admin)).json()
    assert (detail["user"]["role"], detail["group_ids"]) == ("end_user", [])

    promoted = await client.put(f"{user_path}/role", json={"role": "tenant_admin"}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["user"]["role"] == "tenant_admin"
    refused = await client.put(
        f"/api/users/{tenant_a.admin.id}/role", json={"role": "end_user"}, headers=admin
    )  # an administrator cannot demote themself
    assert refused.status_code == 403, refused.text
    assert (await client.put(f"{user_path}/role", json={"role": "super_admin"}, headers=admin)).status_code == 400

    # Deactivation stops the user's API keys at once, in the gateway's cache too; reactivation restores them.
    await add_channel(client, admin, upstream, "primary")
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    deactivated = await client.post(f"{user_path}/deactivate", headers=admin)
    assert deactivated.json()["user"]["status"] == "inactive"
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 401
    assert (await client.post(f"{user_path}/deactivate", headers=admin)).status_code == 409
    assert (await client.post(f"{user_path}/reactivate", headers=admin)).json()["user"]["status"] == "active"
    assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(key))).status_code == 200
    no_mfa = await client.post(f"{user_path}/reset-mfa", headers=admin)
    assert no_mfa.status_code == 409
    assert "no two-factor authentication to reset" in no_mfa.json()["detail"]

    # Another organization's user is as unknown as an invented id; an end user may use none of this.
    other = f"/api/users/{tenant_b.user.id}"
    for method, path in (("GET", other), ("POST", f"{other}/deactivate"), ("POST", f"{other}/reset-mfa")):
        assert (await client.request(method, path, headers=admin)).status_code == 404, path
    assert (await client.put(f"{other}/role", json={"role": "end_user"}, headers=admin)).status_code == 404
    assert (await client.get(f"/api/users/{tenant_b.user.id}", headers=auth_headers(tenant_b.admin))).status_code == 200
    assert (await client.get("/api/users", headers=auth_headers(tenant_b.user))).status_code == 403


async def test_groups_through_the_api(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    created = await client.post("/api/groups", json={"name": "research", "description": "R&D"}, headers=admin)
    assert created.status_code == 201, created.text
    group = created.json()["group"]
    assert (group["name"], group["description"], group["member_count"]) == ("research", "R&D", 0)
    duplicate = await client.post("/api/groups", json={"name": "research"}, headers=admin)
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]

    path = f"/api/groups/{group['id']}"
    added = await client.post(f"{path}/members", json={"user_id": str(tenant_a.user.id)}, headers=admin)
    assert [member["email"] for member in added.json()["members"]] == [tenant_a.user.email]
    user_detail = (await client.get(f"/api/users/{tenant_a.user.id}", headers=admin)).json()
    assert user_detail["group_ids"] == [group["id"]]
    again = await client.post(f"{path}/members", json={"user_id": str(tenant_a.user.id)}, headers=admin)
    assert again.status_code == 409
    foreign = await client.post(f"{path}/members", json={"user_id": str(tenant_b.user.id)}, headers=admin)
    assert foreign.status_code == 404
    counts = {item["name"]: item["member_count"] for item in (await client.get("/api/groups", headers=admin)).json()}
    assert counts == {"engineering": 0, "research": 1}

    renamed = await client.patch(path, json={"name": "science"}, headers=admin)
    assert (renamed.json()["group"]["name"], renamed.json()["group"]["description"]) == ("science", "R&D")

    # A group some channel serves alone cannot go; once the channel goes, it can.
    channel = await add_channel(client, admin, upstream, "research-only", scope="group", group_id=group["id"])
    blocked = await client.delete(path, headers=admin)
    assert blocked.status_code == 409
    assert "research-only" in blocked.json()["detail"]
    assert (await client.delete(f"/api/channels/{channel['id']}", headers=admin)).status_code == 204
    removed = await client.delete(f"{path}/members/{tenant_a.user.id}", headers=admin)
    assert removed.status_code == 204
    assert (await client.delete(f"{path}/members/{tenant_a.user.id}", headers=admin)).status_code == 404
    assert (await client.delete(path, headers=admin)).status_code == 204
    assert (await client.get(path, headers=admin)).status_code == 404

    b_group = f"/api/groups/{tenant_b.group.id}"
    for method in ("GET", "DELETE"):
        assert (await client.request(method, b_group, headers=admin)).status_code == 404
    assert (await client.patch(b_group, json={"name": "x"}, headers=admin)).status_code == 404
    assert (await client.get("/api/groups", headers=auth_headers(tenant_a.user))).status_code == 403


async def test_the_audit_trail_through_the_api_filters_and_pages_without_gaps(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    for name in ("one", "two", "three"):
        assert (await client.post("/api/groups", json={"name": name}, headers=admin)).status_code == 201
    await client.put(f"/api/users/{tenant_a.user.id}/role", json={"role": "tenant_admin"}, headers=admin)

    everything = (await client.get("/api/audit", headers=admin)).json()
    actions = [event["action"] for event in everything["items"]]
    assert actions == ["user.role_changed", "group.created", "group.created", "group.created"]
    assert everything["next_cursor"] is None
    assert {event["actor_user_id"] for event in everything["items"]} == {str(tenant_a.admin.id)}
    by_actor = (await client.get("/api/audit", params={"actor": tenant_a.admin.email}, headers=admin)).json()
    assert [event["action"] for event in by_actor["items"]] == actions
    assert (await client.get("/api/audit", params={"actor": "someone-else"}, headers=admin)).json()["items"] == []
    groups = (await client.get("/api/audit", params={"action": "group"}, headers=admin)).json()["items"]
    assert [event["details"]["name"] for event in groups] == ["three", "two", "one"]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/audit", params=params, headers=admin)).json()
        seen += [event["id"] for event in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [event["id"] for event in everything["items"]]

    broken = await client.get("/api/audit", params={"cursor": "not-a-cursor"}, headers=admin)
    assert broken.status_code == 400
    assert "cursor" in broken.json()["detail"]
    assert (await client.get("/api/audit", headers=auth_headers(tenant_b.admin))).json()["items"] == []
    assert (await client.get("/api/audit", headers=auth_headers(tenant_b.user))).status_code == 403
