"""Portal pages for channels (admins): list with health, add and edit with type presets, test, enable, remove."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.encryption import SecretBox
from app.errors import Conflict, NotFound, ServiceError
from app.gateway import admin
from app.gateway.admin import channels_with_type_names, provider_types
from app.gateway.caches import announce_change
from app.gateway.engine import Gateway
from app.gateway.schemas import ChannelCreate, ChannelUpdate
from app.portal.forms import FormInvalid, lines, pairs, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, see_other, viewer_actor
from app.settings import Settings
from db.provider import Channel

FIELDS_IN_MESSAGES = ("keys", "base_url", "models", "model_mapping", "test_model", "test_kind", "type")
TEST_KINDS = [("chat", "Chat completion (one token)"), ("embeddings", "Embeddings (one short input)")]
# The fields a form sends as they are, one string each.
TEXT_FIELDS = (
    "name",
    "base_url",
    "api_version",
    "priority",
    "weight",
    "quota",
    "rate_limit",
    "test_model",
    "test_kind",
)


def field_of(error: ServiceError, default: str = "form") -> str:
    """The form field a service's refusal is about, when its message names one."""
    if isinstance(error, Conflict):
        return "name"
    return next((field for field in FIELDS_IN_MESSAGES if field in error.detail), default)


def _shaped(form: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The form's strings in the API's shapes: lists from lines, mappings from `a=b` lines."""
    data: dict[str, Any] = {name: str(form.get(name) or "").strip() for name in TEXT_FIELDS}
    data["models"] = lines(form.get("models"))
    data["model_mapping"] = pairs(form.get("model_mapping"))
    keys = lines(form.get("keys"))
    if creating:
        data["type"] = str(form.get("type") or "")
        data["keys"] = keys
    elif keys:
        data["keys"] = keys  # left empty on edit: the stored keys stay
    return data


class ChannelPages(Controller):
    path = "/channels"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    @get("/", summary="Channels")
    async def list_channels(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return page(viewer, "channels/list.html", channels=await channels_with_type_names(db_session))

    async def _form_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        settings: Settings,
        *,
        channel: Channel | None,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        if errors and channel is not None:
            # Errors follow a rollback, which expired the channel: load it again before the page reads it.
            await db_session.refresh(channel)
        types = await provider_types(db_session, echo_enabled=settings.echo_provider_enabled)
        return page(
            viewer,
            "channels/form.html",
            status_code=status_code if errors else 200,
            channel=channel,
            types=types,
            test_kinds=TEST_KINDS,
            values=values,
            errors=errors or {},
        )

    @get("/new", summary="Add a channel")
    async def new_channel(
        self,
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        defaults = {"priority": "1", "weight": "1", "quota": "-1", "rate_limit": "0", "type": "openai"}
        return await self._form_page(viewer, db_session, settings, channel=None, values=defaults)

    @post("/new", summary="Add a channel")
    async def create_channel(
        self,
        gateway: NamedDependency[Gateway],
        secret_box: NamedDependency[SecretBox],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: NamedDependency[Redis],
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = {name: str(value) for name, value in form.items() if name != "keys"}
        try:
            data = parse(ChannelCreate, _shaped(form, creating=True))
            await admin.create_channel(
                db_session,
                viewer.principal.tenant_id,
                data,
                secret_box,
                echo_enabled=settings.echo_provider_enabled,
                actor=viewer_actor(viewer, request),
            )
        except FormInvalid as invalid:
            return await self._form_page(
                viewer, db_session, settings, channel=None, values=values, errors=invalid.errors
            )
        except ServiceError as error:
            await db_session.rollback()
            errors = {field_of(error): error.detail}
            return await self._form_page(
                viewer, db_session, settings, channel=None, values=values, errors=errors, status_code=error.status_code
            )
        await db_session.commit()
        await announce_change(redis, gateway.catalog, f"tenant:{viewer.principal.tenant_id}")
        return see_other(f"{PORTAL}/channels")

    @get("/{channel_id:uuid}", summary="Edit a channel")
    async def edit_channel(
        self,
        settings: NamedDependency[Settings],
        channel_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        values = {
            "name": channel.name,
            "type": type_name,
            "base_url": channel.base_url or "",
            "api_version": channel.api_version or "",
            "models": "\n".join(channel.models),
            "model_mapping": "\n".join(f"{alias}={upstream}" for alias, upstream in channel.model_mapping.items()),
            "priority": str(channel.priority),
            "weight": str(channel.weight),
            "quota": str(channel.quota),
            "rate_limit": str(channel.rate_limit),
            "test_model": channel.test_model or "",
            "test_kind": channel.test_kind,
        }
        return await self._form_page(viewer, db_session, settings, channel=channel, values=values)

    @post("/{channel_id:uuid}", summary="Save a channel")
    async def update_channel(
        self,
        settings: NamedDependency[Settings],
        gateway: NamedDependency[Gateway],
        secret_box: NamedDependency[SecretBox],
        channel_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: NamedDependency[Redis],
    ) -> Template | Response[None]:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        form = dict(await request.form())
        values = {name: str(value) for name, value in form.items() if name != "keys"} | {"type": type_name}
        try:
            data = parse(ChannelUpdate, _shaped(form, creating=False))
            await admin.update_channel(db_session, channel, data, secret_box, actor=viewer_actor(viewer, request))
        except FormInvalid as invalid:
            await db_session.rollback()
            return await self._form_page(
                viewer, db_session, settings, channel=channel, values=values, errors=invalid.errors
            )
        except ServiceError as error:
            await db_session.rollback()
            errors = {field_of(error): error.detail}
            return await self._form_page(
                viewer,
                db_session,
                settings,
                channel=channel,
                values=values,
                errors=errors,
                status_code=error.status_code,
            )
        await db_session.commit()
        await announce_change(redis, gateway.catalog, f"tenant:{viewer.principal.tenant_id}")
        return see_other(f"{PORTAL}/channels")

    @post("/{channel_id:uuid}/test", summary="Test a channel")
    async def test_channel(
        self,
        gateway: NamedDependency[Gateway],
        secret_box: NamedDependency[SecretBox],
        channel_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: NamedDependency[Redis],
    ) -> Response[None]:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        await admin.test_channel(db_session, channel, secret_box, gateway.http)
        await db_session.commit()
        await announce_change(redis, gateway.catalog, f"tenant:{viewer.principal.tenant_id}")
        return see_other(f"{PORTAL}/channels#channel-{channel_id}")

    @post("/{channel_id:uuid}/{action:str}", summary="Enable, disable or remove a channel")
    async def change_channel(
        self,
        gateway: NamedDependency[Gateway],
        channel_id: FromPath[UUID],
        action: FromPath[str],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
        redis: NamedDependency[Redis],
    ) -> Response[None]:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        if action == "delete":
            await admin.remove_channel(db_session, channel, actor=viewer_actor(viewer, request))
        elif action in ("enable", "disable"):
            await admin.set_channel_status(db_session, channel, f"{action}d", actor=viewer_actor(viewer, request))
        else:
            raise NotFound("No such page.")
        await db_session.commit()
        await announce_change(redis, gateway.catalog, f"tenant:{viewer.principal.tenant_id}")
        return see_other(f"{PORTAL}/channels")
