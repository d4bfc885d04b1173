"""A tenant's OAuth/OIDC sign-in providers: reading them, and adding, changing and removing them (admins)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import OAuthProviderCreate, OAuthProviderUpdate
from app.encryption import SecretBox, secret_context
from app.errors import Conflict, InvalidRequest, NotFound
from app.tenants.services import Actor, audit_change, lookup_tenant_by_slug
from db.auth import OAuthProvider
from db.session import set_session_tenant

DEFAULT_SCOPES = {
    "oidc": ["openid", "profile", "email"],
    "google": ["openid", "profile", "email"],
    "github": ["read:user", "user:email"],
}


def oauth_client_secret_context(provider: OAuthProvider) -> str:
    return secret_context("auth_oauth_providers", "encrypted_client_secret", provider.tenant_id)


async def list_oauth_providers(session: AsyncSession, *, enabled_only: bool = False) -> list[OAuthProvider]:
    """The session's organization's sign-in providers, by name."""
    statement = select(OAuthProvider).order_by(OAuthProvider.provider_name)
    if enabled_only:
        statement = statement.where(OAuthProvider.is_enabled.is_(True))
    return list(await session.scalars(statement))


async def sign_in_providers(session: AsyncSession, tenant_slug: str) -> list[OAuthProvider]:
    """The enabled providers of the organization called `tenant_slug`, for its public sign-in page (none for an
    unknown slug); the session is scoped to that organization from here on."""
    tenant = await lookup_tenant_by_slug(session, tenant_slug)
    if tenant is None:
        return []
    await set_session_tenant(session, tenant.id)
    return await list_oauth_providers(session, enabled_only=True)


async def existing_oauth_provider(session: AsyncSession, provider_id: UUID) -> OAuthProvider:
    provider = await session.get(OAuthProvider, provider_id)
    if provider is None:
        raise NotFound("No such provider.")
    return provider


class OAuthProviderService:
    """Changes to the providers, each audited and committed here so that the API and the portal save them alike.
    The audit trail names the fields changed, never the client secret's value."""

    def __init__(self, session: AsyncSession, secret_box: SecretBox, redirect_uri: str) -> None:
        self.session = session
        self.secret_box = secret_box
        self.redirect_uri = redirect_uri

    async def create(self, actor: Actor, tenant_id: UUID, data: OAuthProviderCreate) -> OAuthProvider:
        """Add a sign-in provider; its client secret is stored encrypted and never shown again."""
        if data.kind == "oidc" and not data.discovery_url:
            raise InvalidRequest(
                "An 'oidc' provider needs its discovery_url (…/.well-known/openid-configuration).",
                field="discovery_url",
            )
        if await self.session.scalar(select(OAuthProvider.id).where(OAuthProvider.provider_name == data.name)):
            raise Conflict(f"A provider named '{data.name}' already exists.", field="name")
        provider = OAuthProvider(
            tenant_id=tenant_id,
            provider_name=data.name,
            kind=data.kind,
            display_name=data.display_name,
            discovery_url=data.discovery_url if data.kind == "oidc" else None,
            client_id=data.client_id,
            encrypted_client_secret="",
            redirect_uri=self.redirect_uri,
            scopes=data.scopes or DEFAULT_SCOPES[data.kind],
        )
        provider.encrypted_client_secret = self.secret_box.encrypt(
            data.client_secret, context=oauth_client_secret_context(provider)
        )
        self.session.add(provider)
        await self.session.flush()
        audit_change(
            self.session, actor, "oauth_provider.created", "oauth_provider", provider.id, name=data.name, kind=data.kind
        )
        await self.session.commit()
        return provider

    async def update(self, actor: Actor, provider_id: UUID, data: OAuthProviderUpdate) -> OAuthProvider:
        """Change the fields given; a new client secret replaces the stored one, none keeps it."""
        provider = await existing_oauth_provider(self.session, provider_id)
        changed = []
        for field in ("client_id", "discovery_url", "display_name", "scopes", "is_enabled"):
            value = getattr(data, field)
            if field == "scopes" and value == []:
                # No scopes is what its kind asks for, as on creation: none at all would break every sign-in.
                value = DEFAULT_SCOPES[provider.kind]
            if value is not None and value != getattr(provider, field):
                setattr(provider, field, value)
                changed.append(field)
        if data.client_secret is not None:
            provider.encrypted_client_secret = self.secret_box.encrypt(
                data.client_secret, context=oauth_client_secret_context(provider)
            )
            changed.append("client_secret")
        if changed:
            audit_change(
                self.session,
                actor,
                "oauth_provider.updated",
                "oauth_provider",
                provider.id,
                name=provider.provider_name,
                fields=changed,
            )
        await self.session.commit()
        return provider

    async def delete(self, actor: Actor, provider_id: UUID) -> None:
        """Remove a provider with its users' links to it; they sign in with a password again."""
        provider = await existing_oauth_provider(self.session, provider_id)
        await self.session.delete(provider)
        await self.session.flush()
        audit_change(
            self.session, actor, "oauth_provider.deleted", "oauth_provider", provider_id, name=provider.provider_name
        )
        await self.session.commit()
