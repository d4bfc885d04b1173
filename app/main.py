"""create_app(settings): plugins, middleware and routers of the Lyss service — nothing else."""

from __future__ import annotations

import httpx2
from advanced_alchemy.exceptions import RepositoryError
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.asyncio import Redis

from app.auth.controllers import (
    OAUTH_CLIENT_STATE_KEY,
    SECRET_BOX_STATE_KEY,
    SETTINGS_STATE_KEY,
    AuthController,
    IdentityController,
    OAuthController,
)
from app.auth.guards import full_session_only
from app.auth.middleware import (
    AUTH_STORE_STATE_KEY,
    JWT_KEYRING_STATE_KEY,
    SESSION_MAKER_STATE_KEY,
    AuthenticationMiddleware,
)
from app.auth.oauth import OAuthClient
from app.auth.redis_store import AuthStore
from app.database import create_database_plugin
from app.edge import require_json_body
from app.encryption import SecretBox
from app.errors import ServiceError
from app.observability.controllers import PACKAGE_VERSION, OperationsController
from app.observability.errors import internal_error_handler, repository_error_handler, service_error_handler
from app.observability.middleware import RequestContextMiddleware
from app.settings import ConfigurationError, Settings, database_url
from app.tenants.controllers import TenantController
from db.session import create_engine, create_session_maker


def create_app(settings: Settings) -> Litestar:
    """Build the ASGI app for resolved settings (concrete DATABASE_URL and REDIS_URL, keys present)."""
    if settings.database_url is None or settings.redis_url is None:
        raise ConfigurationError(
            "create_app needs DATABASE_URL and REDIS_URL; `lyss serve` starts the embedded servers first"
        )
    engine = create_engine(
        database_url(settings.database_url, "DATABASE_URL").render_as_string(hide_password=False),
        pool_size=settings.database_pool_size,
    )
    session_maker = create_session_maker(engine)
    redis = Redis.from_url(settings.redis_url)
    http = httpx2.AsyncClient(follow_redirects=False)

    async def close_clients() -> None:
        await redis.aclose()
        await http.aclose()

    def provide_redis() -> Redis:
        return redis

    app = Litestar(
        route_handlers=[OperationsController, IdentityController, AuthController, OAuthController, TenantController],
        plugins=[create_database_plugin(engine, session_maker)],
        middleware=[DefineMiddleware(AuthenticationMiddleware, exclude=["^/schema"])],
        guards=[full_session_only],
        before_request=require_json_body,
        dependencies={"redis": Provide(provide_redis, sync_to_thread=False)},
        exception_handlers={
            ServiceError: service_error_handler,
            RepositoryError: repository_error_handler,
            HTTP_500_INTERNAL_SERVER_ERROR: internal_error_handler,
        },
        state=State(
            {
                SETTINGS_STATE_KEY: settings,
                JWT_KEYRING_STATE_KEY: settings.jwt_keyring,
                SECRET_BOX_STATE_KEY: SecretBox(settings.encryption_keyring),
                AUTH_STORE_STATE_KEY: AuthStore(redis),
                SESSION_MAKER_STATE_KEY: session_maker,
                OAUTH_CLIENT_STATE_KEY: OAuthClient(http),
            }
        ),
        on_shutdown=[close_clients],
        openapi_config=OpenAPIConfig(title="Lyss", version=PACKAGE_VERSION, path="/schema"),
        request_max_body_size=settings.max_request_body_bytes,
        logging_config=None,  # app.observability.logging owns the root logger
    )
    # Outermost, around Litestar's own exception handling, so that every response carries a request id.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, settings.trusted_proxy_networks)
    return app
