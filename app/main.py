"""create_app(settings): plugins, middleware and routers of the Lyss service — nothing else."""

from __future__ import annotations

import asyncio

import httpx2
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.asyncio import BlockingConnectionPool, Redis

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
from app.chat.controllers import ConversationController
from app.database import create_database_plugin
from app.edge import check_request
from app.encryption import SecretBox
from app.errors import ServiceError
from app.gateway.asgi import GatewayApi, route_gateway
from app.gateway.controllers import (
    GATEWAY_STATE_KEY,
    ChannelController,
    PriceController,
    ProviderTypeController,
    TokenController,
    UsageController,
)
from app.gateway.proxy import create_gateway
from app.gateway.usage import UsageFlusher
from app.jobs.controllers import JOB_QUEUE_STATE_KEY, JobController
from app.jobs.services import create_queue, load_job_modules
from app.memory.controllers import MemoryController
from app.observability.controllers import PACKAGE_VERSION, OperationsController
from app.observability.errors import (
    DATABASE_ERRORS,
    database_error_handler,
    internal_error_handler,
    service_error_handler,
)
from app.observability.middleware import RequestContextMiddleware
from app.observability.tracing import traced, tracing_plugin
from app.portal.router import create_portal_router, home, portal_template_config
from app.settings import ConfigurationError, Settings, database_url
from app.storage import create_object_store
from app.storage.controllers import OBJECT_STORE_STATE_KEY, ObjectController
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
    # Blocking pool: under a burst, a call waits for a free connection instead of failing.
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(settings.redis_url, max_connections=200, timeout=10))
    http = httpx2.AsyncClient(follow_redirects=False)
    secret_box = SecretBox(settings.encryption_keyring)
    gateway = create_gateway(settings, session_maker, redis, secret_box)
    catalog = gateway.catalog
    flusher = UsageFlusher(redis, session_maker)
    # The API checks submitted kinds and payloads against the same registry the workers run.
    load_job_modules(settings)
    job_queue = create_queue(redis)
    background: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    async def start_background_work() -> None:
        await job_queue.connect()
        background.append(asyncio.create_task(catalog.listen_for_changes(redis, stop)))
        background.append(asyncio.create_task(flusher.run(stop)))

    async def stop_background_work() -> None:
        stop.set()  # both loops notice within half a second and end on their own
        await asyncio.gather(*background, return_exceptions=True)
        await flusher.drain()  # nothing settled stays behind in Redis when this worker goes
        await gateway.close()
        await redis.aclose()
        await http.aclose()
        await engine.dispose()

    def provide_redis() -> Redis:
        return redis

    app = Litestar(
        route_handlers=[
            OperationsController,
            IdentityController,
            AuthController,
            OAuthController,
            TenantController,
            ChannelController,
            TokenController,
            PriceController,
            UsageController,
            ProviderTypeController,
            JobController,
            ConversationController,
            MemoryController,
            ObjectController,
            create_portal_router(),
            home,
        ],
        plugins=[
            plugin for plugin in (create_database_plugin(engine, session_maker), tracing_plugin(settings)) if plugin
        ],
        middleware=[DefineMiddleware(AuthenticationMiddleware, exclude=["^/schema", "^/v1/", "^/portal"])],
        guards=[full_session_only],
        before_request=check_request,
        dependencies={"redis": Provide(provide_redis, sync_to_thread=False)},
        exception_handlers={
            ServiceError: service_error_handler,
            **dict.fromkeys(DATABASE_ERRORS, database_error_handler),
            HTTP_500_INTERNAL_SERVER_ERROR: internal_error_handler,
        },
        state=State(
            {
                SETTINGS_STATE_KEY: settings,
                JWT_KEYRING_STATE_KEY: settings.jwt_keyring,
                SECRET_BOX_STATE_KEY: secret_box,
                AUTH_STORE_STATE_KEY: AuthStore(redis),
                SESSION_MAKER_STATE_KEY: session_maker,
                OAUTH_CLIENT_STATE_KEY: OAuthClient(http),
                GATEWAY_STATE_KEY: gateway,
                JOB_QUEUE_STATE_KEY: job_queue,
                OBJECT_STORE_STATE_KEY: create_object_store(settings),
            }
        ),
        template_config=portal_template_config(),
        on_startup=[start_background_work],
        on_shutdown=[stop_background_work],
        openapi_config=OpenAPIConfig(title="Lyss", version=PACKAGE_VERSION, path="/schema"),
        request_max_body_size=settings.max_request_body_bytes,
        logging_config=None,  # app.observability.logging owns the root logger
    )
    # Outermost, around Litestar's own exception handling, so that every response carries a request id.
    # The /v1 API goes around Litestar (see app/gateway/asgi.py), still inside the request context.
    gateway_api = GatewayApi(gateway, settings.max_request_body_bytes)
    app.asgi_handler = RequestContextMiddleware(
        route_gateway(gateway_api, traced(gateway_api, settings), app.asgi_handler), settings.trusted_proxy_networks
    )
    return app
