"""The portal's audit log names who and what (emails, channel, group and key names) and reads its details."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel, issue_key
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import sign_in
from tests.support.tenants import TenantRows


def row_text(page: str, event_id: str) -> str:
    """The visible text of one event's row, tags dropped and spaces folded."""
    found = re.search(rf'<tr id="event-{event_id}">(.*?)</tr>', page, re.S)
    assert found, event_id
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found[1])).split())


def rows_by_action(page: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    pattern = r'<tr id="event-([0-9a-f-]{36})">.*?<code class="action">(.*?)</code>'
    for event_id, action in re.findall(pattern, page, re.S):
        rows.setdefault(re.sub(r"<[^>]+>", "", action), []).append(row_text(page, event_id))
    return rows


@contextmanager
def statements_seen() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def test_the_audit_log_names_actors_and_targets_and_reads_details_as_changes(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, upstream: MockUpstream
) -> None:
    admin = auth_headers(tenant_a.admin)
    kept = await add_channel(client, admin, upstream, "primary")
    gone = await add_channel(client, admin, upstream, "short-lived")
    renamed = await client.patch(f"/api/channels/{kept['id']}", json={"name": "main", "priority": 5}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert (await client.delete(f"/api/channels/{gone['id']}", headers=admin)).status_code == 204
    group = await client.patch(f"/api/groups/{tenant_a.group.id}", json={"name": "platform"}, headers=admin)
    assert group.status_code == 200, group.text
    await issue_key(client, admin, name="ci key")
    promoted = await client.put(f"/api/users/{tenant_a.user.id}/role", json={"role": "tenant_admin"}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    await sign_in(client, tenant_a, tenant_a.admin.email)

    with statements_seen() as statements:
        page = await client.get("/portal/audit")
    assert page.status_code == 200
    rows = rows_by_action(page.text)

    admin_email, user_email = tenant_a.admin.email, tenant_a.user.email
    (updated,) = rows["channel.updated"]
    assert admin_email in updated
    assert "channel main" in updated
    assert "fields: name, priority" in updated
    (deleted,) = rows["channel.deleted"]
    assert f"channel {gone['id'][:8]}… (deleted)" in deleted
    assert "name: short-lived" in deleted
    (regrouped,) = rows["group.updated"]
    assert "group platform" in regrouped
    assert "name: engineering → platform" in regrouped
    (key,) = rows["token.created"]
    assert "API key ci key" in key
    assert f"owner: {admin_email}" in key
    (role,) = rows["user.role_changed"]
    assert f"user {user_email}" in role
    assert "role: end_user → tenant_admin" in role
    # No dict's repr, no bare target id of a live row.
    assert "{'" not in page.text
    assert kept["id"] not in page.text
    assert str(tenant_a.group.id) not in page.text

    # One query per kind of target for the whole page, whatever the number of rows.
    for table in ("provider_channels", "tenant_user_groups", "provider_tokens"):
        assert sum(f"FROM {table}" in statement for statement in statements) == 1, table
