"""A tenant's OAuth/OIDC sign-in providers: reading them, and adding, changing and removing them (admins)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import OAuthProviderCreate, OAuthProviderUpdate
from app.encryption import SecretBox, secret_context
from app.errors import Conflict, InvalidRequest, NotFound
from app.tenants.services import lookup_tenant_by_slug
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
    """Changes to the providers, each committed here so that the API and the portal save them alike."""

    def __init__(self, session: AsyncSession, secret_box: SecretBox, redirect_uri: str) -> None:
        self.session = session
        self.secret_box = secret_box
        self.redirect_uri = redirect_uri

    async def create(self, tenant_id: UUID, data: OAuthProviderCreate) -> OAuthProvider:
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
        await self.session.commit()
        return provider

    async def update(self, provider_id: UUID, data: OAuthProviderUpdate) -> OAuthProvider:
        """Change the fields given; a new client secret replaces the stored one, none keeps it."""
        provider = await existing_oauth_provider(self.session, provider_id)
        for field in ("client_id", "discovery_url", "display_name", "scopes", "is_enabled"):
            value = getattr(data, field)
            if value is not None:
                setattr(provider, field, value)
        if data.client_secret is not None:
            provider.encrypted_client_secret = self.secret_box.encrypt(
                data.client_secret, context=oauth_client_secret_context(provider)
            )
        await self.session.commit()
        return provider

    async def delete(self, provider_id: UUID) -> None:
        """Remove a provider with its users' links to it; they sign in with a password again."""
        await self.session.delete(await existing_oauth_provider(self.session, provider_id))
        await self.session.commit()
