"""The audit trail's details as the portal shows them: lines people read, not a dict's repr."""

from __future__ import annotations

from app.tenants.audit import readable_details

ALICE = "0199f0aa-0000-7000-8000-000000000001"


def test_an_old_value_beside_the_new_one_becomes_one_change() -> None:
    lines = readable_details({"email": "bo@example.com", "old_role": "end_user", "role": "tenant_admin"})
    assert lines == ["email: bo@example.com", "role: end_user → tenant_admin"]
    assert readable_details({"old_name": "Ops", "name": "Operations"}) == ["name: Ops → Operations"]


def test_a_from_to_pair_becomes_one_change() -> None:
    details = {"name": {"from": "Acme", "to": "Acme Inc."}, "currency": {"from": "USD", "to": "EUR"}}
    assert readable_details(details) == ["name: Acme → Acme Inc.", "currency: USD → EUR"]


def test_lists_are_joined_and_an_empty_one_says_none() -> None:
    assert readable_details({"name": "main", "fields": ["base_url", "keys"]}) == [
        "name: main",
        "fields: base_url, keys",
    ]
    assert readable_details({"fields": []}) == ["fields: none"]


def test_nested_values_are_flattened_one_level_and_deeper_ones_kept_compact() -> None:
    details = {"filters": {"model": "gpt-4o", "status_code": 200, "user_id": None, "extra": {"b": 1, "a": [2]}}}
    assert readable_details(details) == [
        "filters model: gpt-4o",
        "filters status code: 200",
        'filters extra: {"a": [2], "b": 1}',
    ]


def test_empty_values_are_left_out_and_booleans_read_yes_or_no() -> None:
    details = {"enabled": False, "llm_model": None, "embedding_model": "text-embed", "count": 3}
    assert readable_details(details) == ["enabled: no", "embedding model: text-embed", "count: 3"]
    assert readable_details({}) == []


def test_known_user_ids_become_their_email() -> None:
    names = {ALICE: "alice@example.com"}
    assert readable_details({"user_id": ALICE}, names) == ["user: alice@example.com"]
    assert readable_details({"name": "k", "owner": ALICE}, names) == ["name: k", "owner: alice@example.com"]
    # An id nobody knows any more stays as it was recorded.
    gone = "0199f0aa-0000-7000-8000-0000000000ff"
    assert readable_details({"user_id": gone}, names) == [f"user id: {gone}"]
