"""The portal mounted under /portal: its pages, static files, templates, middleware and error pages."""

from __future__ import annotations

import datetime
import re
from typing import Any
from urllib.parse import urlencode

from jinja2 import pass_context
from jinja2.runtime import Context
from litestar import Router, get
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from markupsafe import Markup, escape
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.edge import ACCEPTS_FORM
from app.errors import ServiceError
from app.observability.controllers import PACKAGE_VERSION
from app.observability.errors import DATABASE_ERRORS
from app.observability.maintenance_api import maintenance_notice
from app.portal.controllers.account import AccountPages
from app.portal.controllers.activity import AuditPages, JobPages
from app.portal.controllers.channels import ChannelPages
from app.portal.controllers.chat import ChatPages
from app.portal.controllers.conversations import ConversationPages
from app.portal.controllers.joining import JoiningPages
from app.portal.controllers.knowledge import knowledge_pages
from app.portal.controllers.memories import MemoryPages
from app.portal.controllers.passwords import PasswordResetPages
from app.portal.controllers.platform import PlatformTenantPages
from app.portal.controllers.prices import PricePages
from app.portal.controllers.settings import SettingsPages
from app.portal.controllers.signin import SignInController
from app.portal.controllers.tokens import TokenPages
from app.portal.controllers.usage import UsagePages
from app.portal.controllers.users import GroupPages, UserPages
from app.portal.controllers.webhooks import WebhookPages
from app.portal.web import (
    PORTAL,
    PUBLIC_PAGE,
    STATIC,
    TEMPLATES,
    PortalMiddleware,
    flashed_notice,
    http_error_page,
    internal_error_page,
    navigation,
    service_error_page,
)
from app.settings import KeyRing
from app.tenants.money import DEFAULT_CURRENCY, format_money

_BREAK_AFTER = re.compile(r"([@./_-])")


def _when(value: datetime.datetime | None, empty: str = "—") -> str:
    if value is None:
        return empty
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _breakable(value: object) -> Markup:
    """Text that may wrap after `@ . - _ /` rather than at any letter: emails, model names, dotted actions."""
    return Markup(_BREAK_AFTER.sub(r"\1<wbr>", str(escape(value))))  # noqa: S704 -- escaped first; adds only <wbr>


def _when_ms(value: datetime.datetime | None) -> str:
    """A moment to the millisecond, in UTC: what a call's record needs to be matched with logs."""
    if value is None:
        return "—"
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _number(value: int | float) -> str:
    return f"{value:,}"


@pass_context
def _money(context: Context, credits: int, currency: str | None = None) -> str:
    """Credits as an amount of the viewer's organization's currency: `{{ token.used_quota | money }}`; another
    organization's amounts in theirs: `{{ tenant.cost_this_month | money(tenant.currency) }}`."""
    if currency is None:
        viewer = context.get("viewer")
        currency = viewer.organization.currency if viewer is not None else DEFAULT_CURRENCY
    return format_money(credits, currency)


def _query_string(values: dict[str, Any]) -> str:
    return urlencode({name: value for name, value in values.items() if value not in (None, "")})


def _configure(engine: JinjaTemplateEngine) -> None:
    environment = engine.engine
    environment.filters.update(
        when=_when, when_ms=_when_ms, breakable=_breakable, number=_number, money=_money, query_string=_query_string
    )
    environment.globals.update(
        navigation=navigation,
        flashed_notice=flashed_notice,
        maintenance_notice=maintenance_notice,
        build_version=PACKAGE_VERSION,
    )


def portal_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_configure)


@get("/", opt={"exclude_from_auth": True}, include_in_schema=False)
async def home() -> Redirect:
    return Redirect(f"{PORTAL}/")


def create_portal_router(
    keyring: KeyRing, session_maker: async_sessionmaker[AsyncSession], kb_max_upload_bytes: int
) -> Router:
    """The portal's pages; its middleware checks session cookies and CSRF tokens with these. Knowledge base
    uploads may be `kb_max_upload_bytes` large."""
    static = create_static_files_router(
        path="/static", directories=[STATIC], opt={PUBLIC_PAGE: True}, include_in_schema=False
    )
    return Router(
        path=PORTAL,
        route_handlers=[
            SignInController,
            AccountPages,
            PasswordResetPages,
            JoiningPages,
            UsagePages,
            ChannelPages,
            TokenPages,
            UserPages,
            GroupPages,
            AuditPages,
            JobPages,
            MemoryPages,
            knowledge_pages(kb_max_upload_bytes),
            ConversationPages,
            ChatPages,
            SettingsPages,
            PricePages,
            WebhookPages,
            PlatformTenantPages,
            static,
        ],
        middleware=[PortalMiddleware(keyring, session_maker)],
        opt={ACCEPTS_FORM: True},
        include_in_schema=False,
        exception_handlers={
            ServiceError: service_error_page,
            HTTPException: http_error_page,
            # The app answers these in JSON; a page answers them in HTML (a refusal with its status, or a 500).
            **dict.fromkeys(DATABASE_ERRORS, internal_error_page),
            Exception: internal_error_page,
        },
    )
