"""create_app(settings): plugins, middleware and routers of the Lyss service — nothing else."""

from __future__ import annotations

import asyncio

import httpx2
from litestar import Litestar, Router
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.auth.controllers import AuthController, IdentityController, OAuthController
from app.auth.guards import full_session_only
from app.auth.middleware import AuthenticationMiddleware
from app.auth.oauth import OAuthClient
from app.auth.redis_store import AuthStore
from app.chat.controllers import ConversationController
from app.database import create_database_plugin
from app.dependencies import app_dependencies
from app.edge import check_request
from app.errors import ServiceError
from app.gateway.controllers import (
    ChannelController,
    ModelAliasController,
    ModelRoutingController,
    PriceController,
    ProviderTypeController,
    ResponseCacheController,
    TokenController,
    UsageController,
)
from app.gateway.openapi import document_gateway
from app.gateway.usage import warn_without_usage_writer
from app.gateway.v1 import GatewayApi, gateway_mount
from app.jobs.controllers import JobController
from app.jobs.services import load_job_modules
from app.knowledge.controllers import KnowledgeBaseController, document_controller
from app.memory.controllers import MemoryController
from app.observability.controllers import PACKAGE_VERSION, OperationsController
from app.observability.errors import (
    DATABASE_ERRORS,
    database_error_handler,
    internal_error_handler,
    service_error_handler,
)
from app.observability.maintenance_api import MaintenanceController, refusing_writes
from app.observability.middleware import RequestContextMiddleware
from app.observability.tracing import tracing_plugin
from app.portal.router import create_portal_router, home, portal_template_config
from app.portal.web import routing_error
from app.resources import Resources
from app.settings import Settings
from app.storage.controllers import ObjectController
from app.tenants.controllers import (
    AuditController,
    GroupController,
    InvitationController,
    TenantController,
    UserAdminController,
    WebhookController,
)
from app.tenants.platform_controllers import PlatformTenantController


def create_app(settings: Settings) -> Litestar:
    """Build the ASGI app for resolved settings (concrete DATABASE_URL and REDIS_URL, keys present)."""
    resources = Resources.build(settings)
    http = httpx2.AsyncClient(follow_redirects=False)
    auth_store = AuthStore(resources.redis)
    catalog = resources.gateway.catalog
    # The API checks submitted kinds and payloads against the same registry the workers run.
    load_job_modules(settings)
    background: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    async def start_background_work() -> None:
        await resources.job_queue.connect()
        background.append(asyncio.create_task(catalog.listen_for_changes(resources.redis, stop)))
        # Usage is written by `lyss worker`: this process only appends to the Redis streams, and says so if
        # no worker is running.
        background.append(asyncio.create_task(warn_without_usage_writer(resources.redis, stop)))

    async def stop_background_work() -> None:
        stop.set()  # both loops notice within half a second and end on their own
        await asyncio.gather(*background, return_exceptions=True)
        await http.aclose()
        await resources.close()

    # Every route but the gateway's, under the guard that every signed-in session meets. The gateway, mounted
    # beside this router, checks its own API keys: a guard there would only cost time (Litestar copies the
    # route handler for each guard call, ~7 µs).
    sessions = Router(
        "/",
        route_handlers=[
            OperationsController,
            MaintenanceController,
            IdentityController,
            AuthController,
            OAuthController,
            TenantController,
            PlatformTenantController,
            UserAdminController,
            InvitationController,
            GroupController,
            AuditController,
            WebhookController,
            ChannelController,
            TokenController,
            PriceController,
            ModelAliasController,
            ModelRoutingController,
            ResponseCacheController,
            UsageController,
            ProviderTypeController,
            JobController,
            ConversationController,
            MemoryController,
            KnowledgeBaseController,
            document_controller(settings.kb_max_upload_bytes),
            ObjectController,
            create_portal_router(settings.jwt_keyring, resources.session_maker, settings.kb_max_upload_bytes),
            home,
        ],
        guards=[full_session_only],
    )
    gateway_api = GatewayApi(resources.gateway, settings.max_request_body_bytes, resources.maintenance)
    app = Litestar(
        route_handlers=[sessions, gateway_mount(gateway_api)],
        plugins=[
            plugin
            for plugin in (
                create_database_plugin(resources.engine, resources.session_maker),
                tracing_plugin(settings),
            )
            if plugin
        ],
        # App-wide, since Litestar deep-copies a router and its arguments (the session maker cannot be);
        # the gateway's mount opts out.
        middleware=[
            DefineMiddleware(
                AuthenticationMiddleware,
                keyring=settings.jwt_keyring,
                auth_store=auth_store,
                session_maker=resources.session_maker,
                exclude=["^/schema", "^/portal"],
            )
        ],
        before_request=refusing_writes(resources.maintenance, check_request),
        dependencies=app_dependencies(resources, auth_store, OAuthClient(http)),
        exception_handlers={
            ServiceError: service_error_handler,
            **dict.fromkeys(DATABASE_ERRORS, database_error_handler),
            HTTP_500_INTERNAL_SERVER_ERROR: internal_error_handler,
            # Raised by the router before any route (and so before the portal's own handlers): a page under
            # /portal, JSON elsewhere.
            NotFoundException: routing_error,
            MethodNotAllowedException: routing_error,
        },
        template_config=portal_template_config(),
        on_startup=[start_background_work],
        on_shutdown=[stop_background_work],
        openapi_config=OpenAPIConfig(title="Lyss", version=PACKAGE_VERSION, path="/schema"),
        request_max_body_size=settings.max_request_body_bytes,
        logging_config=None,  # app.observability.logging owns the root logger
    )
    # Outermost, around Litestar's router and its exception handling, so that every response (a 404 from the
    # router too) carries a request id: Litestar's own middleware runs only once a route is found.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, settings.trusted_proxy_networks)
    document_gateway(app.openapi_schema)
    return app
