"""HTTP endpoints of the gateway's management API: channels, keys, prices, usage (the /v1 API is `v1.py`)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT, HTTP_303_SEE_OTHER
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guards import requires_tenant_admin
from app.auth.services import ADMIN_ROLES
from app.auth.tokens import Principal
from app.encryption import SecretBox
from app.errors import NotFound
from app.gateway import admin
from app.gateway.admin import ChannelAdmin, PriceAdmin, ResponseCacheAdmin, RoutingAdmin, TokenAdmin
from app.gateway.schemas import (
    BuiltInPriceList,
    ChannelCreate,
    ChannelRead,
    ChannelTestResult,
    ChannelUpdate,
    DailyUsage,
    ModelAliasRead,
    ModelAliasWrite,
    ModelList,
    ModelListRequest,
    ModelRoutingRead,
    ModelRoutingWrite,
    PriceRead,
    PriceWrite,
    ProviderTypeRead,
    ResponseCacheSettings,
    TokenCreate,
    TokenCreated,
    TokenRead,
    TokenUpdate,
    UsageDetail,
    UsagePage,
)
from app.schemas import read_as
from app.settings import Settings
from app.storage.base import ObjectStore
from app.tenants.services import Actor, own_organization
from db.provider import ApiToken, Channel, ProviderType

AuthRequest = Request[Principal, Any, State]


# --- management ---------------------------------------------------------------------------------


class ChannelController(Controller):
    path = "/api/channels"
    tags = ["gateway: channels"]
    guards = [requires_tenant_admin]

    @get("/", summary="The organization's channels")
    async def list_channels(
        self, secret_box: NamedDependency[SecretBox], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[ChannelRead]:
        rows = await db_session.execute(
            select(Channel, ProviderType.name).join(ProviderType).order_by(Channel.priority.desc(), Channel.name)
        )
        return [admin.channel_read(channel, type_name, secret_box) for channel, type_name in rows.all()]

    @post("/", status_code=HTTP_201_CREATED, summary="Add a channel")
    async def create_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        secret_box: NamedDependency[SecretBox],
        data: JSONBody[ChannelCreate],
    ) -> ChannelRead:
        channel = await channel_admin.create(data)
        return admin.channel_read(channel, data.type, secret_box)

    @post(
        "/fetch-models",
        status_code=HTTP_200_OK,
        summary="Ask a provider which models it serves (with a typed key, or a stored channel's)",
    )
    async def fetch_models(
        self, channel_admin: NamedDependency[ChannelAdmin], data: JSONBody[ModelListRequest]
    ) -> ModelList:
        return await channel_admin.fetch_models(data)

    @get("/{channel_id:uuid}", summary="One channel")
    async def get_channel(
        self,
        secret_box: NamedDependency[SecretBox],
        channel_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> ChannelRead:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        return admin.channel_read(channel, type_name, secret_box)

    @patch("/{channel_id:uuid}", summary="Change a channel")
    async def update_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        secret_box: NamedDependency[SecretBox],
        channel_id: FromPath[UUID],
        data: JSONBody[ChannelUpdate],
        db_session: NamedDependency[AsyncSession],
    ) -> ChannelRead:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        await channel_admin.update(channel, data)
        return admin.channel_read(channel, type_name, secret_box)

    @delete("/{channel_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Remove a channel")
    async def delete_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        channel_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        await channel_admin.remove(channel)

    @post("/{channel_id:uuid}/enable", summary="Enable a channel (also one that was auto-disabled)")
    async def enable_channel(
        self,
        channel_id: FromPath[UUID],
        channel_admin: NamedDependency[ChannelAdmin],
        secret_box: NamedDependency[SecretBox],
        db_session: NamedDependency[AsyncSession],
    ) -> ChannelRead:
        return await self._set_status(channel_id, "enabled", channel_admin, db_session, secret_box)

    @post("/{channel_id:uuid}/disable", summary="Disable a channel")
    async def disable_channel(
        self,
        channel_id: FromPath[UUID],
        channel_admin: NamedDependency[ChannelAdmin],
        secret_box: NamedDependency[SecretBox],
        db_session: NamedDependency[AsyncSession],
    ) -> ChannelRead:
        return await self._set_status(channel_id, "disabled", channel_admin, db_session, secret_box)

    async def _set_status(
        self,
        channel_id: UUID,
        status: str,
        channel_admin: ChannelAdmin,
        db_session: AsyncSession,
        secret_box: SecretBox,
    ) -> ChannelRead:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        await channel_admin.set_status(channel, status)
        return admin.channel_read(channel, type_name, secret_box)

    @post("/{channel_id:uuid}/test", summary="Call the channel once with its test model; report latency and error")
    async def test_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        channel_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
    ) -> ChannelTestResult:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        return await channel_admin.test(channel)


class TokenController(Controller):
    """API keys: users manage their own; admins every key of the organization."""

    path = "/api/tokens"
    tags = ["gateway: API keys"]

    @get("/", summary="API keys (yours; every key for admins)")
    async def list_tokens(self, request: AuthRequest, db_session: NamedDependency[AsyncSession]) -> list[TokenRead]:
        statement = select(ApiToken).order_by(ApiToken.created_at.desc())
        if request.user.role not in ADMIN_ROLES:
            statement = statement.where(ApiToken.user_id == request.user.user_id)
        return [admin.token_read(token) for token in await db_session.scalars(statement)]

    @post("/", status_code=HTTP_201_CREATED, summary="Issue an API key; the key is shown once")
    async def create_token(
        self, token_admin: NamedDependency[TokenAdmin], data: JSONBody[TokenCreate], request: AuthRequest
    ) -> TokenCreated:
        owner = data.user_id or request.user.user_id
        if owner != request.user.user_id and request.user.role not in ADMIN_ROLES:
            raise NotFound("No such user in this organization.", field="user_id")
        token, key = await token_admin.create(owner, data)
        return TokenCreated(token=admin.token_read(token), key=key)

    @get("/{token_id:uuid}", summary="One API key")
    async def get_token(
        self, token_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> TokenRead:
        return admin.token_read(await admin.visible_token(db_session, request.user, token_id))

    @patch("/{token_id:uuid}", summary="Change an API key (limits, status)")
    async def update_token(
        self,
        token_admin: NamedDependency[TokenAdmin],
        token_id: FromPath[UUID],
        data: JSONBody[TokenUpdate],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> TokenRead:
        token = await admin.visible_token(db_session, request.user, token_id)
        await token_admin.update(token, data)
        return admin.token_read(token)

    @delete("/{token_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Revoke an API key")
    async def delete_token(
        self,
        token_admin: NamedDependency[TokenAdmin],
        token_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        await token_admin.revoke(await admin.visible_token(db_session, request.user, token_id))


class PriceController(Controller):
    path = "/api/model-prices"
    tags = ["gateway: prices"]
    guards = [requires_tenant_admin]

    @get("/", summary="Model prices: the organization's own, and the built-in list's where it applies")
    async def list_prices(self, request: AuthRequest, db_session: NamedDependency[AsyncSession]) -> list[PriceRead]:
        organization = await own_organization(db_session, request.user.tenant_id)
        return await admin.effective_prices(db_session, organization.currency)

    @get("/built-in", summary="The built-in price list (US dollars), its date, and whether it applies")
    async def built_in_prices(
        self, request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> BuiltInPriceList:
        organization = await own_organization(db_session, request.user.tenant_id)
        return admin.built_in_prices(organization.currency)

    @put("/{model:str}", summary="Set a model's price")
    async def set_price(
        self,
        price_admin: NamedDependency[PriceAdmin],
        model: Annotated[str, PathParameter(min_length=1, max_length=100)],
        data: JSONBody[PriceWrite],
    ) -> PriceRead:
        return admin.price_read(await price_admin.set(model, data))

    @delete("/{model:str}", status_code=HTTP_204_NO_CONTENT, summary="Remove a model's price")
    async def delete_price(
        self,
        price_admin: NamedDependency[PriceAdmin],
        model: Annotated[str, PathParameter(min_length=1, max_length=100)],
    ) -> None:
        await price_admin.remove(model)


AliasName = Annotated[str, PathParameter(min_length=1, max_length=100)]


class ModelAliasController(Controller):
    path = "/api/model-aliases"
    tags = ["gateway: routing"]
    guards = [requires_tenant_admin]

    @get("/", summary="The organization's model aliases")
    async def list_aliases(self, db_session: NamedDependency[AsyncSession]) -> list[ModelAliasRead]:
        return await admin.model_aliases(db_session)

    @get("/{name:str}", summary="One model alias")
    async def get_alias(self, db_session: NamedDependency[AsyncSession], name: AliasName) -> ModelAliasRead:
        return await admin.model_alias(db_session, name)

    @put("/{name:str}", summary="Set a model alias: a name for served models, tried in order")
    async def set_alias(
        self, routing_admin: NamedDependency[RoutingAdmin], name: AliasName, data: JSONBody[ModelAliasWrite]
    ) -> ModelAliasRead:
        return read_as(ModelAliasRead, await routing_admin.set_alias(name, data))

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, summary="Remove a model alias")
    async def delete_alias(self, routing_admin: NamedDependency[RoutingAdmin], name: AliasName) -> None:
        await routing_admin.remove_alias(name)


class ModelRoutingController(Controller):
    path = "/api/model-routing"
    tags = ["gateway: routing"]
    guards = [requires_tenant_admin]

    @get("/", summary="The models routed other than by priority and weight")
    async def list_strategies(self, db_session: NamedDependency[AsyncSession]) -> list[ModelRoutingRead]:
        return await admin.routing_strategies(db_session)

    @put("/{model:str}", summary="Set how a model's channels are chosen")
    async def set_strategy(
        self, routing_admin: NamedDependency[RoutingAdmin], model: AliasName, data: JSONBody[ModelRoutingWrite]
    ) -> ModelRoutingRead:
        return read_as(ModelRoutingRead, await routing_admin.set_strategy(model, data))

    @delete("/{model:str}", status_code=HTTP_204_NO_CONTENT, summary="Route a model by priority and weight again")
    async def delete_strategy(self, routing_admin: NamedDependency[RoutingAdmin], model: AliasName) -> None:
        await routing_admin.remove_strategy(model)


def _usage_filter(request: AuthRequest, **values: Any) -> admin.UsageFilter:
    # Users see their own usage; admins the organization's, optionally narrowed to a user.
    if request.user.role not in ADMIN_ROLES:
        values["user_id"] = request.user.user_id
    return admin.UsageFilter(**values)


class ResponseCacheController(Controller):
    path = "/api/response-cache"
    tags = ["gateway: response cache"]
    guards = [requires_tenant_admin]

    @get("/", summary="The response cache settings: on or off, how long and how large answers are kept, a hit's cost")
    async def get_settings(self, db_session: NamedDependency[AsyncSession]) -> ResponseCacheSettings:
        return await admin.response_cache_settings(db_session)

    @put("/", summary="Set the response cache settings (every field; omitted ones take their default)")
    async def set_settings(
        self, response_cache_admin: NamedDependency[ResponseCacheAdmin], data: JSONBody[ResponseCacheSettings]
    ) -> ResponseCacheSettings:
        return await response_cache_admin.set(data)


class UsageController(Controller):
    path = "/api/usage"
    tags = ["gateway: usage"]

    @get("/", summary="Usage log, newest first, keyset-paginated")
    async def list_usage(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        since: FromQuery[datetime.datetime | None] = None,
        until: FromQuery[datetime.datetime | None] = None,
        user_id: FromQuery[UUID | None] = None,
        token_id: FromQuery[UUID | None] = None,
        channel_id: FromQuery[UUID | None] = None,
        model: Annotated[str | None, QueryParameter(max_length=100)] = None,
        outcome: Annotated[str | None, QueryParameter(max_length=30)] = None,
        status_code: Annotated[int | None, QueryParameter(ge=100, le=599)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> UsagePage:
        filters = _usage_filter(
            request,
            since=since,
            until=until,
            user_id=user_id,
            token_id=token_id,
            channel_id=channel_id,
            model=model,
            outcome=outcome,
            status_code=status_code,
        )
        return await admin.usage_page(db_session, filters, cursor=cursor, limit=limit)

    @get("/daily", summary="Usage per day: requests, errors, tokens, cost")
    async def daily_usage(
        self,
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
        since: FromQuery[datetime.datetime | None] = None,
        until: FromQuery[datetime.datetime | None] = None,
        user_id: FromQuery[UUID | None] = None,
        token_id: FromQuery[UUID | None] = None,
        model: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> list[DailyUsage]:
        filters = _usage_filter(
            request,
            since=since,
            until=until,
            user_id=user_id,
            token_id=token_id,
            model=model,
        )
        return await admin.usage_by_day(db_session, filters)

    @get("/{usage_id:uuid}", summary="One call of the usage log: names, outcome, reason, error and failover attempts")
    async def usage_call(
        self, usage_id: FromPath[UUID], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> UsageDetail:
        return await admin.usage_detail(db_session, request.user, usage_id)

    @get(
        "/exports/{job_id:uuid}",
        summary="A finished usage export (`usage.export` job): 303 to a short-lived download URL",
    )
    async def download_export(
        self,
        actor: NamedDependency[Actor],
        object_store: NamedDependency[ObjectStore],
        job_id: FromPath[UUID],
        request: AuthRequest,
        db_session: NamedDependency[AsyncSession],
    ) -> Redirect:
        url = await admin.export_download_url(db_session, object_store, request.user, job_id, actor=actor)
        await db_session.commit()  # the download is audited; a redirect is not auto-committed
        return Redirect(url, status_code=HTTP_303_SEE_OTHER)


class ProviderTypeController(Controller):
    path = "/api/provider-types"
    tags = ["gateway: channels"]

    @get("/", summary="The kinds of channel this installation offers")
    async def list_types(
        self, settings: NamedDependency[Settings], request: AuthRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[ProviderTypeRead]:
        return [
            ProviderTypeRead(
                name=row.name,
                display_name=row.display_name,
                base_url=row.base_url,
                api_format=row.api_format,
                output_limit_parameter=row.output_limit_parameter,
            )
            for row in await admin.provider_types(db_session, echo_enabled=settings.echo_provider_enabled)
        ]
