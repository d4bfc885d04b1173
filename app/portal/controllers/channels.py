"""Portal pages for channels (admins): list with health, add and edit with type presets, test, enable, remove."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.encryption import SecretBox
from app.errors import NotFound
from app.gateway import admin
from app.gateway.admin import ChannelAdmin, channels_with_type_names, provider_types
from app.gateway.schemas import ChannelCreate, ChannelRead, ChannelUpdate
from app.portal.forms import FormSubmission, lines, pairs, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, provide_viewer_actor, see_other
from app.settings import Settings

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
    dependencies = {"viewer": Provide(provide_admin_viewer), "actor": Provide(provide_viewer_actor)}

    @get("/", summary="Channels")
    async def list_channels(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=24)
        return page(
            viewer,
            "channels/list.html",
            channels=await channels_with_type_names(db_session),
            calls=await admin.calls_per_channel(db_session, since),
        )

    async def _form_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        settings: Settings,
        *,
        channel: ChannelRead | None,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
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
        channel_admin: NamedDependency[ChannelAdmin],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = {name: str(value) for name, value in form.items() if name != "keys"}
        async with FormSubmission(db_session) as submission:
            await channel_admin.create(parse(ChannelCreate, _shaped(form, creating=True)))
        if submission.refused:
            return await self._form_page(
                viewer,
                db_session,
                settings,
                channel=None,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/channels", "channel_added")

    @get("/{channel_id:uuid}", summary="Edit a channel")
    async def edit_channel(
        self,
        secret_box: NamedDependency[SecretBox],
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
        shown = admin.channel_read(channel, type_name, secret_box)
        return await self._form_page(viewer, db_session, settings, channel=shown, values=values)

    @post("/{channel_id:uuid}", summary="Save a channel")
    async def update_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        secret_box: NamedDependency[SecretBox],
        settings: NamedDependency[Settings],
        channel_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        channel, type_name = await admin.channel_with_type(db_session, channel_id)
        # Read before the change: a refusal rolls it back, and the page shows the channel as it is stored.
        shown = admin.channel_read(channel, type_name, secret_box)
        form = dict(await request.form())
        values = {name: str(value) for name, value in form.items() if name != "keys"} | {"type": type_name}
        async with FormSubmission(db_session) as submission:
            await channel_admin.update(channel, parse(ChannelUpdate, _shaped(form, creating=False)))
        if submission.refused:
            return await self._form_page(
                viewer,
                db_session,
                settings,
                channel=shown,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/channels", "channel_saved")

    @post("/{channel_id:uuid}/test", summary="Test a channel")
    async def test_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        channel_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],  # asked for so that the administrators-only check runs
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        await channel_admin.test(channel)
        return see_other(f"{PORTAL}/channels#channel-{channel_id}", "channel_tested")

    @post("/{channel_id:uuid}/{action:str}", summary="Enable, disable or remove a channel")
    async def change_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        channel_id: FromPath[UUID],
        action: FromPath[str],
        viewer: NamedDependency[Viewer],  # asked for so that the administrators-only check runs
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        channel, _ = await admin.channel_with_type(db_session, channel_id)
        if action == "delete":
            await channel_admin.remove(channel)
        elif action in ("enable", "disable"):
            await channel_admin.set_status(channel, f"{action}d")
        else:
            raise NotFound("No such page.")
        return see_other(f"{PORTAL}/channels", {"delete": "channel_removed"}.get(action, f"channel_{action}d"))
