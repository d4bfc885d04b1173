"""What any handler may ask for by parameter name, provided app-wide from the process's `Resources`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from saq.queue.redis import RedisQueue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.oauth import OAuthClient, oauth_redirect_uri
from app.auth.oauth_providers import OAuthProviderService
from app.auth.redis_store import AuthStore
from app.auth.services import AuthService
from app.auth.tokens import Principal
from app.encryption import SecretBox
from app.gateway.admin import ChannelAdmin, PriceAdmin, ResponseCacheAdmin, RoutingAdmin, TokenAdmin
from app.gateway.engine import Gateway
from app.observability.middleware import client_context
from app.redis_client import RedisDependency
from app.resources import Resources
from app.settings import Settings
from app.tenants.accounts import AccountService
from app.tenants.budgets import BudgetService
from app.tenants.groups import GroupService
from app.tenants.platform import PlatformTenants
from app.tenants.services import Actor
from app.tenants.webhooks import EventHub, WebhookService
from db.auth import User


async def provide_actor(request: Request[Principal, Any, State], db_session: NamedDependency[AsyncSession]) -> Actor:
    """The signed-in caller as the audit trail names them (by email, as the portal and sign-in do), with the
    request's address and agent."""
    email = await db_session.scalar(select(User.email).where(User.id == request.user.user_id))
    return Actor(name=email or str(request.user.user_id), user_id=request.user.user_id, client=client_context(request))


async def provide_auth_service(
    db_session: NamedDependency[AsyncSession],
    auth_store: NamedDependency[AuthStore],
    settings: NamedDependency[Settings],
    secret_box: NamedDependency[SecretBox],
    request: Request[Any, Any, State],
) -> AuthService:
    return AuthService(db_session, auth_store, settings, secret_box, client_context(request))


async def provide_account_service(
    db_session: NamedDependency[AsyncSession],
    auth_store: NamedDependency[AuthStore],
    settings: NamedDependency[Settings],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
    request: Request[Any, Any, State],
) -> AccountService:
    return AccountService(db_session, auth_store, settings, redis, gateway.catalog, client_context(request))


async def provide_group_service(
    db_session: NamedDependency[AsyncSession], redis: RedisDependency, gateway: NamedDependency[Gateway]
) -> GroupService:
    return GroupService(db_session, redis, gateway.catalog)


async def provide_budget_service(
    db_session: NamedDependency[AsyncSession], redis: RedisDependency, gateway: NamedDependency[Gateway]
) -> BudgetService:
    return BudgetService(db_session, redis, gateway.catalog)


async def provide_oauth_provider_service(
    db_session: NamedDependency[AsyncSession],
    secret_box: NamedDependency[SecretBox],
    settings: NamedDependency[Settings],
) -> OAuthProviderService:
    return OAuthProviderService(db_session, secret_box, oauth_redirect_uri(settings))


async def provide_channel_admin(
    request: Request[Principal, Any, State],
    db_session: NamedDependency[AsyncSession],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
    actor: NamedDependency[Actor],
    secret_box: NamedDependency[SecretBox],
    settings: NamedDependency[Settings],
) -> ChannelAdmin:
    return ChannelAdmin(
        db_session,
        tenant_id=request.user.tenant_id,
        redis=redis,
        catalog=gateway.catalog,
        actor=actor,
        secret_box=secret_box,
        http=gateway.http,
        echo_enabled=settings.echo_provider_enabled,
    )


async def provide_token_admin(
    request: Request[Principal, Any, State],
    db_session: NamedDependency[AsyncSession],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
    actor: NamedDependency[Actor],
) -> TokenAdmin:
    return TokenAdmin(db_session, tenant_id=request.user.tenant_id, redis=redis, catalog=gateway.catalog, actor=actor)


async def provide_price_admin(
    request: Request[Principal, Any, State],
    db_session: NamedDependency[AsyncSession],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
) -> PriceAdmin:
    return PriceAdmin(db_session, tenant_id=request.user.tenant_id, redis=redis, catalog=gateway.catalog)


async def provide_routing_admin(
    request: Request[Principal, Any, State],
    db_session: NamedDependency[AsyncSession],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
) -> RoutingAdmin:
    return RoutingAdmin(db_session, tenant_id=request.user.tenant_id, redis=redis, catalog=gateway.catalog)


async def provide_response_cache_admin(
    request: Request[Principal, Any, State],
    db_session: NamedDependency[AsyncSession],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
    actor: NamedDependency[Actor],
) -> ResponseCacheAdmin:
    return ResponseCacheAdmin(
        db_session, tenant_id=request.user.tenant_id, redis=redis, catalog=gateway.catalog, actor=actor
    )


async def provide_webhook_service(
    db_session: NamedDependency[AsyncSession],
    secret_box: NamedDependency[SecretBox],
    actor: NamedDependency[Actor],
    settings: NamedDependency[Settings],
    session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
    redis: RedisDependency,
) -> WebhookService:
    return WebhookService(db_session, secret_box, actor, EventHub(settings, session_maker, redis))


async def provide_platform_tenants(
    session_maker: NamedDependency[async_sessionmaker[AsyncSession]],
    redis: RedisDependency,
    gateway: NamedDependency[Gateway],
    job_queue: NamedDependency[RedisQueue],
    settings: NamedDependency[Settings],
    actor: NamedDependency[Actor],
) -> PlatformTenants:
    """The operator's changes to organizations (routes guarded for super admins), audited as `actor`."""
    return PlatformTenants(
        session_maker,
        redis,
        gateway.catalog,
        job_queue,
        settings,
        actor=f"platform operator ({actor.name})",
        actor_user_id=actor.user_id,
        client=actor.client,
    )


def _constant(value: object) -> Provide:
    def provide() -> object:
        return value

    return Provide(provide, sync_to_thread=False, use_cache=True)


def app_dependencies(resources: Resources, auth_store: AuthStore, oauth_client: OAuthClient) -> dict[str, Provide]:
    """Each shared object under the name handlers use for it (`db_session` comes from the database plugin)."""
    return {
        "settings": _constant(resources.settings),
        "session_maker": _constant(resources.session_maker),
        "redis": _constant(resources.redis),
        "secret_box": _constant(resources.secret_box),
        "gateway": _constant(resources.gateway),
        "object_store": _constant(resources.object_store),
        "job_queue": _constant(resources.job_queue),
        "maintenance": _constant(resources.maintenance),
        "auth_store": _constant(auth_store),
        "oauth_client": _constant(oauth_client),
        "actor": Provide(provide_actor),
        "auth": Provide(provide_auth_service),
        "accounts": Provide(provide_account_service),
        "groups": Provide(provide_group_service),
        "budgets": Provide(provide_budget_service),
        "oauth_providers": Provide(provide_oauth_provider_service),
        "channel_admin": Provide(provide_channel_admin),
        "token_admin": Provide(provide_token_admin),
        "price_admin": Provide(provide_price_admin),
        "routing_admin": Provide(provide_routing_admin),
        "response_cache_admin": Provide(provide_response_cache_admin),
        "webhooks": Provide(provide_webhook_service),
        "platform_tenants": Provide(provide_platform_tenants),
    }
