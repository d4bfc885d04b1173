"""The portal's settings (admins) and conversations (each user's own) pages over HTTP, with bad input and isolation."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.oauth_providers import oauth_client_secret_context
from app.encryption import SecretBox
from app.settings import Settings
from db.auth import OAuthProvider
from db.chat import Conversation, Message
from db.provider import ModelPrice
from db.session import tenant_session
from db.tenant import AuditEvent, Job, Organization
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows, audit_events

SECRET = "s3cret-client-value-7f2a"
NEW_SECRET = "rotated-client-value-9c4e"


def option_values(html: str, select_name: str) -> list[str]:
    found = re.search(rf'<select id="{select_name}" name="{select_name}"[^>]*>(.*?)</select>', html, re.S)
    assert found, select_name
    return re.findall(r'<option value="([^"]*)"', found[1])


async def organization_of(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> Organization:
    async with tenant_session(session_maker, tenant.id) as session:
        return await session.get_one(Organization, tenant.id)


async def events_named(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, action: str
) -> list[AuditEvent]:
    return [event for event in await audit_events(session_maker, tenant.id) if event.action == action]


# --- settings -------------------------------------------------------------------------------------


async def test_renaming_the_organization_is_saved_audited_and_bad_names_change_nothing(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    settings_page = await client.get("/portal/settings")
    assert settings_page.status_code == 200
    assert tenant_a.slug in settings_page.text
    assert " style=" not in settings_page.text
    assert "<script>" not in settings_page.text

    empty = await client.post("/portal/settings/organization", data={"csrf_token": token, "name": "   "})
    assert empty.status_code == 400
    assert field_error(empty.text, "name") == "This field is required."
    too_long = await client.post("/portal/settings/organization", data={"csrf_token": token, "name": "n" * 256})
    assert too_long.status_code == 400
    assert field_error(too_long.text, "name") == "At most 255 characters."
    assert 'value="' + "n" * 256 + '"' in too_long.text  # what was typed stays
    assert (await organization_of(session_maker, tenant_a)).name == tenant_a.slug.title()
    assert await events_named(session_maker, tenant_a, "tenant.updated") == []

    renamed = await client.post("/portal/settings/organization", data={"csrf_token": token, "name": " Acme Labs "})
    assert renamed.status_code == 303
    assert renamed.headers["location"] == "/portal/settings?saved=organization#organization"
    organization = await organization_of(session_maker, tenant_a)
    assert (organization.name, organization.slug) == ("Acme Labs", tenant_a.slug)
    (event,) = await events_named(session_maker, tenant_a, "tenant.updated")
    assert (event.actor, event.actor_user_id) == (tenant_a.admin.email, tenant_a.admin.id)
    assert event.details == {"name": {"from": tenant_a.slug.title(), "to": "Acme Labs"}}
    shown = await client.get(renamed.headers["location"])
    assert '<span class="tenant">Acme Labs</span>' in shown.text
    assert "The organization&#39;s name and currency are saved." in shown.text


async def test_the_display_currency_is_chosen_in_settings_and_amounts_are_shown_in_it(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert (await organization_of(session_maker, tenant_a)).currency == "USD"
    assert '<div class="value" id="stat-cost">$0.00</div>' in (await client.get("/portal/")).text

    unknown = await client.post(
        "/portal/settings/organization", data={"csrf_token": token, "name": "Acme", "currency": "XYZ"}
    )
    assert unknown.status_code == 400
    assert field_error(unknown.text, "currency") is not None
    assert (await organization_of(session_maker, tenant_a)).currency == "USD"

    euros = await client.post(
        "/portal/settings/organization", data={"csrf_token": token, "name": "Acme", "currency": "EUR"}
    )
    assert euros.status_code == 303
    assert (await organization_of(session_maker, tenant_a)).currency == "EUR"
    (event,) = await events_named(session_maker, tenant_a, "tenant.updated")
    assert event.details["currency"] == {"from": "USD", "to": "EUR"}
    assert '<div class="value" id="stat-cost">€0.00</div>' in (await client.get("/portal/")).text
    assert '<option value="EUR" selected>' in (await client.get("/portal/settings")).text


async def test_the_security_policy_checkboxes_turn_each_rule_on_and_off(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    turned_on = await client.post("/portal/settings/policy", data={"csrf_token": token, "require_mfa_for_admins": "on"})
    assert turned_on.status_code == 303
    settings = (await organization_of(session_maker, tenant_a)).settings
    assert (settings["require_mfa_for_admins"], settings["allow_self_signup"]) == (True, False)
    page = (await client.get("/portal/settings")).text
    assert re.search(r'name="require_mfa_for_admins" value="on" checked', page)
    assert not re.search(r'name="allow_self_signup" value="on" checked', page)

    swapped = await client.post("/portal/settings/policy", data={"csrf_token": token, "allow_self_signup": "on"})
    assert swapped.status_code == 303
    settings = (await organization_of(session_maker, tenant_a)).settings
    assert (settings["require_mfa_for_admins"], settings["allow_self_signup"]) == (False, True)
    events = await events_named(session_maker, tenant_a, "tenant.policy_changed")
    assert sorted((event.details for event in events), key=lambda details: details["allow_self_signup"]) == [
        {"require_mfa_for_admins": True, "allow_self_signup": False},
        {"require_mfa_for_admins": False, "allow_self_signup": True},
    ]


async def test_oauth_providers_are_added_edited_and_removed_with_the_secret_write_only_and_encrypted(
    client: Client,
    settings: Settings,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    new_form = await client.get("/portal/settings/oauth/new")
    assert new_form.status_code == 200
    assert "http://lyss.test/api/auth/oauth/callback" in new_form.text
    base = {"csrf_token": token, "kind": "oidc", "client_secret": SECRET, "display_name": "Corp SSO"}

    bad = await client.post(
        "/portal/settings/oauth/new", data=base | {"name": "Not A Name", "client_id": "", "scopes": "x" * 101}
    )
    assert bad.status_code == 400
    assert field_error(bad.text, "name")
    assert field_error(bad.text, "client_id") == "This field is required."
    assert field_error(bad.text, "scopes") == "At most 100 characters."
    assert 'value="Corp SSO"' in bad.text  # the rest of the input stays
    no_discovery = await client.post(
        "/portal/settings/oauth/new", data=base | {"name": "corp", "client_id": "corp-client"}
    )
    assert no_discovery.status_code == 400
    assert "discovery_url" in (field_error(no_discovery.text, "discovery_url") or "")
    duplicate = await client.post(
        "/portal/settings/oauth/new",
        data=base | {"name": "github", "kind": "github", "client_id": "again"},
    )
    assert duplicate.status_code == 409
    assert "already exists" in (field_error(duplicate.text, "name") or "")
    for refused in (bad, no_discovery, duplicate):
        assert SECRET not in refused.text
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(OAuthProvider.provider_name))) == ["github"]

    created = await client.post(
        "/portal/settings/oauth/new",
        data=base
        | {
            "name": "corp",
            "client_id": "corp-client",
            "discovery_url": "https://sso.example.com/.well-known/openid-configuration",
        },
    )
    assert created.status_code == 303
    box = SecretBox(settings.encryption_keyring)
    async with tenant_session(session_maker, tenant_a.id) as session:
        corp = await session.scalar(select(OAuthProvider).where(OAuthProvider.provider_name == "corp"))
    assert corp is not None
    assert (corp.client_id, corp.display_name, corp.scopes) == (
        "corp-client",
        "Corp SSO",
        ["openid", "profile", "email"],
    )
    assert SECRET not in corp.encrypted_client_secret
    assert box.decrypt(corp.encrypted_client_secret, context=oauth_client_secret_context(corp)) == SECRET
    listing = await client.get("/portal/settings")
    edit_form = await client.get(f"/portal/settings/oauth/{corp.id}")
    assert edit_form.status_code == 200
    for html in (listing.text, edit_form.text):
        assert "corp-client" in html
        assert SECRET not in html
        assert corp.encrypted_client_secret not in html

    too_long = await client.post(
        f"/portal/settings/oauth/{corp.id}", data={"csrf_token": token, "client_id": "c" * 256, "is_enabled": "on"}
    )
    assert too_long.status_code == 400
    assert field_error(too_long.text, "client_id") == "At most 255 characters."
    kept = await client.post(
        f"/portal/settings/oauth/{corp.id}",
        data={"csrf_token": token, "client_id": "corp-client-2", "client_secret": "", "display_name": "Corp"},
    )
    assert kept.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        corp = await session.get_one(OAuthProvider, corp.id)
    assert (corp.client_id, corp.display_name, corp.is_enabled) == ("corp-client-2", "Corp", False)
    # The scopes field left empty keeps the kind's scopes (it used to save none, which breaks sign-in).
    assert corp.scopes == ["openid", "profile", "email"]
    assert box.decrypt(corp.encrypted_client_secret, context=oauth_client_secret_context(corp)) == SECRET
    rotated = await client.post(
        f"/portal/settings/oauth/{corp.id}",
        data={"csrf_token": token, "client_id": "corp-client-2", "client_secret": NEW_SECRET, "is_enabled": "on"},
    )
    assert rotated.status_code == 303
    assert NEW_SECRET not in (await client.get(f"/portal/settings/oauth/{corp.id}")).text
    async with tenant_session(session_maker, tenant_a.id) as session:
        corp = await session.get_one(OAuthProvider, corp.id)
    assert corp.is_enabled
    assert box.decrypt(corp.encrypted_client_secret, context=oauth_client_secret_context(corp)) == NEW_SECRET

    # Tenant B's provider is not found, and stays.
    foreign = tenant_b.oauth_provider.id
    assert (await client.get(f"/portal/settings/oauth/{foreign}")).status_code == 404
    assert (
        await client.post(f"/portal/settings/oauth/{foreign}/delete", data={"csrf_token": token})
    ).status_code == 404
    removed = await client.post(f"/portal/settings/oauth/{corp.id}/delete", data={"csrf_token": token})
    assert removed.status_code == 303
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert list(await session.scalars(select(OAuthProvider.provider_name))) == ["github"]
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.get(OAuthProvider, foreign) is not None

    # Each change is in the audit trail under the admin's name, with the fields it changed, never a secret.
    trail = [event for event in await audit_events(session_maker, tenant_a.id) if event.action.startswith("oauth_")]
    assert [(event.action, event.actor, event.target_id) for event in trail] == [
        ("oauth_provider.created", tenant_a.admin.email, str(corp.id)),
        ("oauth_provider.updated", tenant_a.admin.email, str(corp.id)),
        ("oauth_provider.updated", tenant_a.admin.email, str(corp.id)),
        ("oauth_provider.deleted", tenant_a.admin.email, str(corp.id)),
    ]
    assert trail[0].details == {"name": "corp", "kind": "oidc"}
    assert trail[1].details == {"name": "corp", "fields": ["client_id", "display_name", "is_enabled"]}
    assert trail[2].details == {"name": "corp", "fields": ["is_enabled", "client_secret"]}
    assert not any(SECRET in str(event.details) or NEW_SECRET in str(event.details) for event in trail)


async def test_memory_and_chat_defaults_offer_served_models_and_a_new_embedding_model_starts_reembedding(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "chat-and-memory", models=["memory-llm", "gpt-test"])
    await add_channel(client, admin, upstream, "embeddings", models=["embed-test"])
    switched_off = await add_channel(client, admin, upstream, "switched-off", models=["hidden-model"])
    assert (await client.post(f"/api/channels/{switched_off['id']}/disable", headers=admin)).status_code == 201
    token = await sign_in(client, tenant_a, tenant_a.admin.email)

    page = (await client.get("/portal/settings")).text
    assert option_values(page, "embedding_model") == ["", "embed-test", "gpt-test", "memory-llm"]
    assert option_values(page, "default_model") == ["", "embed-test", "gpt-test", "memory-llm"]

    async def reembed_jobs() -> int:
        async with tenant_session(session_maker, tenant_a.id) as session:
            return await session.scalar(select(func.count()).where(Job.kind == "memory.reembed")) or 0

    good = {
        "csrf_token": token,
        "enabled": "on",
        "llm_model": "memory-llm",
        "embedding_model": "embed-test",
        "association_threshold": "0.9",
        "chat_memories": "3",
        "rerank_candidates": "20",
        "language": "german",
        "default_model": "gpt-test",
    }
    assert {"english", "german", "simple"} <= set(option_values(page, "language"))
    unknown_language = await client.post("/portal/settings/defaults", data=good | {"language": "klingon"})
    assert unknown_language.status_code == 400
    assert "is not one words can be matched in" in (field_error(unknown_language.text, "language") or "")
    bad = await client.post(
        "/portal/settings/defaults",
        data=good | {"association_threshold": "2", "chat_memories": "many", "llm_model": "hidden-model"},
    )
    assert bad.status_code == 400
    assert field_error(bad.text, "association_threshold")
    assert field_error(bad.text, "chat_memories") == "Enter a whole number."
    empty = await client.post("/portal/settings/defaults", data=good | {"association_threshold": ""})
    assert field_error(empty.text, "association_threshold") == "This field is required."
    unserved = await client.post("/portal/settings/defaults", data=good | {"default_model": "hidden-model"})
    assert unserved.status_code == 400
    assert field_error(unserved.text, "default_model") == "Choose a model that one of your enabled channels serves."
    assert 'value="0.9"' in unserved.text
    assert (await organization_of(session_maker, tenant_a)).settings == {}
    assert await reembed_jobs() == 0

    saved = await client.post("/portal/settings/defaults", data=good)
    assert saved.status_code == 303
    assert re.fullmatch(r"/portal/settings\?saved=defaults&reembed=[0-9a-f-]{36}#defaults", saved.headers["location"])
    assert await reembed_jobs() == 1
    stored = (await organization_of(session_maker, tenant_a)).settings
    assert stored["memory"] == {
        "enabled": True,
        "llm_model": "memory-llm",
        "embedding_model": "embed-test",
        "association_threshold": 0.9,
        "chat_memories": 3,
        "language": "german",
        "rerank_model": None,
        "rerank_candidates": 20,
    }
    assert stored["chat"] == {"default_model": "gpt-test"}
    notice = (await client.get(saved.headers["location"])).text
    assert "a re-embedding job was started (queued)" in notice

    unchanged = await client.post("/portal/settings/defaults", data=good | {"chat_memories": "4"})
    assert unchanged.headers["location"] == "/portal/settings?saved=defaults#defaults"
    assert await reembed_jobs() == 1


async def test_a_conversation_started_without_a_model_gets_the_default_chat_model(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "chat", models=["gpt-test"])
    no_default = await client.post("/api/conversations", json={"title": "Hi"}, headers=auth_headers(tenant_a.user))
    assert no_default.status_code == 400
    assert "default chat model" in no_default.json()["detail"]
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    saved = await client.post(
        "/portal/settings/defaults",
        data={
            "csrf_token": token,
            "enabled": "on",
            "association_threshold": "0.85",
            "chat_memories": "5",
            "rerank_candidates": "20",
            "default_model": "gpt-test",
        },
    )
    assert saved.status_code == 303
    await client.post("/portal/logout", data={"csrf_token": token})
    started = await client.post("/api/conversations", json={"title": "Hi"}, headers=auth_headers(tenant_a.user))
    assert started.status_code == 201, started.text
    assert started.json()["model"] == "gpt-test"
    named = await client.post("/api/conversations", json={"model": "other"}, headers=auth_headers(tenant_a.user))
    assert named.json()["model"] == "other"
    # Another tenant's default is not this one's.
    assert (
        await client.post("/api/conversations", json={"title": "Hi"}, headers=auth_headers(tenant_b.user))
    ).status_code == 400


@pytest.mark.parametrize(
    "path", ["/portal/settings", "/portal/settings/oauth/new", "/portal/settings/oauth/{provider}"]
)
async def test_an_end_user_cannot_open_the_settings(client: Client, tenant_a: TenantRows, path: str) -> None:
    await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.get(path.format(provider=tenant_a.oauth_provider.id))
    assert response.status_code == 403
    assert "administrators" in response.text
    assert 'href="/portal/settings"' not in (await client.get("/portal/")).text


async def test_an_end_user_cannot_change_any_setting(
    client: Client, tenant_a: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    provider = tenant_a.oauth_provider.id
    posts = {
        "/portal/settings/organization": {"name": "Taken over"},
        "/portal/settings/policy": {"allow_self_signup": "on"},
        "/portal/prices": {"model": "m", "prompt_price": "1", "completion_price": "1"},
        "/portal/prices/delete": {"model": "m"},
        "/portal/settings/defaults": {"association_threshold": "0.9", "chat_memories": "1"},
        "/portal/settings/oauth/new": {"name": "evil", "kind": "github", "client_id": "x", "client_secret": "y"},
        f"/portal/settings/oauth/{provider}": {"client_id": "hijacked"},
        f"/portal/settings/oauth/{provider}/delete": {},
    }
    for path, data in posts.items():
        response = await client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
    organization = await organization_of(session_maker, tenant_a)
    assert (organization.name, organization.settings) == (tenant_a.slug.title(), {})
    async with tenant_session(session_maker, tenant_a.id) as session:
        providers = list(await session.scalars(select(OAuthProvider)))
        assert [(row.provider_name, row.client_id) for row in providers] == [("github", f"{tenant_a.slug}-client")]
        assert await session.scalar(select(func.count()).select_from(ModelPrice)) == 0


# --- conversations --------------------------------------------------------------------------------


async def add_turn(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, conversation_id: object
) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        conversation = await session.get_one(Conversation, conversation_id)
        session.add_all(
            [
                Message(conversation_id=conversation.id, role="user", content="Plan a <b>trip</b>\nto Lisbon"),
                Message(
                    conversation_id=conversation.id,
                    role="assistant",
                    content="Day one: Alfama.",
                    model="fixture-model-2024",
                    prompt_tokens=17,
                    completion_tokens=5,
                    response_time_ms=420,
                ),
            ]
        )
        conversation.message_count = 2
        await session.commit()


async def test_a_user_reads_renames_archives_and_deletes_only_their_own_conversations(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    own = tenant_a.conversation.id
    await add_turn(session_maker, tenant_a, own)
    async with tenant_session(session_maker, tenant_a.id) as session:
        admins = Conversation(user_id=tenant_a.admin.id, title="Admin's private chat", model="fixture-model")
        session.add(admins)
        await session.commit()
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    assert 'href="/portal/conversations"' in (await client.get("/portal/")).text

    listing = (await client.get("/portal/conversations")).text
    assert f'href="/portal/conversations/{own}">Fixture</a>' in listing
    assert "Admin&#39;s private chat" not in listing
    page = await client.get(f"/portal/conversations/{own}")
    assert page.status_code == 200
    assert "Plan a &lt;b&gt;trip&lt;/b&gt;<br>to Lisbon" in page.text  # escaped, line breaks kept
    assert "<code>fixture-model-2024</code> · 17 prompt + 5 completion tokens · 420 ms" in page.text
    assert " style=" not in page.text
    assert 'data-confirm="Delete “Fixture”' in page.text

    for other in (admins.id, tenant_b.conversation.id):
        assert (await client.get(f"/portal/conversations/{other}")).status_code == 404
        for action in ("", "/archive", "/unarchive", "/delete"):
            refused = await client.post(
                f"/portal/conversations/{other}{action}", data={"csrf_token": token, "title": "x"}
            )
            assert refused.status_code == 404, action

    empty = await client.post(f"/portal/conversations/{own}", data={"csrf_token": token, "title": " "})
    assert empty.status_code == 400
    assert field_error(empty.text, "title") == "This field is required."
    too_long = await client.post(f"/portal/conversations/{own}", data={"csrf_token": token, "title": "t" * 201})
    assert field_error(too_long.text, "title") == "At most 200 characters."
    assert "Day one: Alfama." in too_long.text  # the page is whole again, with the input kept
    assert 'value="' + "t" * 201 + '"' in too_long.text
    renamed = await client.post(f"/portal/conversations/{own}", data={"csrf_token": token, "title": "Lisbon trip"})
    assert renamed.status_code == 303

    archived = await client.post(f"/portal/conversations/{own}/archive", data={"csrf_token": token})
    assert archived.status_code == 303
    assert "Lisbon trip" not in (await client.get("/portal/conversations")).text
    assert "Lisbon trip" in (await client.get("/portal/conversations?status=archived")).text
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Conversation, own)
        assert (stored.title, stored.status) == ("Lisbon trip", "archived")
    assert (await client.post(f"/portal/conversations/{own}/unarchive", data={"csrf_token": token})).status_code == 303
    assert "Lisbon trip" in (await client.get("/portal/conversations")).text

    deleted = await client.post(f"/portal/conversations/{own}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/portal/conversations"
    assert (await client.get(f"/portal/conversations/{own}")).status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
        assert [row.title for row in await session.scalars(select(Conversation))] == ["Admin's private chat"]
    async with tenant_session(session_maker, tenant_b.id) as session:
        assert await session.get(Conversation, tenant_b.conversation.id) is not None


async def test_another_tenant_cannot_reach_a_conversation(
    client: Client, tenant_a: TenantRows, tenant_b: TenantRows, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = await sign_in(client, tenant_b, tenant_b.user.email)
    target = tenant_a.conversation.id
    assert (await client.get(f"/portal/conversations/{target}")).status_code == 404
    assert "Fixture" in (await client.get("/portal/conversations")).text  # B's own fixture conversation
    for action in ("", "/archive", "/delete"):
        response = await client.post(
            f"/portal/conversations/{target}{action}", data={"csrf_token": token, "title": "x"}
        )
        assert response.status_code == 404
    async with tenant_session(session_maker, tenant_a.id) as session:
        stored = await session.get_one(Conversation, target)
        assert (stored.title, stored.status) == ("Fixture", "active")


async def test_the_settings_page_shows_the_plan_and_how_much_of_each_limit_is_used(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, upstream: MockUpstream
) -> None:
    await add_channel(client, auth_headers(tenant_a.admin), upstream, "one")
    await sign_in(client, tenant_a, tenant_a.admin.email)
    page = (await client.get("/portal/settings")).text
    plan = re.search(r'<section class="card" id="plan">(.*?)</section>', page, re.S)
    assert plan, page
    text = re.sub(r"<[^>]+>", " ", plan[1])
    text = re.sub(r"\s+", " ", text)
    assert "Plan: Basic" in text
    assert "Active users 2 of 10" in text
    assert "Channels 1 of 5" in text
    assert "Your API keys 0 of 10" in text
