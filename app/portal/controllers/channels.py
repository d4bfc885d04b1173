"""Portal pages for channels (admins): list with search, filters and health; add, clone and edit with type presets,
scope and fetched models; test one or all, enable, remove."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.encryption import SecretBox
from app.errors import NotFound
from app.gateway import admin
from app.gateway.admin import ChannelAdmin, channels_with_type_names, provider_types
from app.gateway.schemas import ChannelCreate, ChannelFilter, ChannelRead, ChannelUpdate, ModelListRequest
from app.jobs.schemas import JobRead
from app.jobs.services import submit_job, visible_job
from app.portal.forms import FormInvalid, FormSubmission, lines, money_field, pairs, parse, parse_with_money
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, provide_viewer_actor, see_other
from app.schemas import read_as
from app.settings import Settings
from app.tenants.services import groups_with_member_counts, organization_users

TEST_KINDS = [("chat", "Chat completion (one token)"), ("embeddings", "Embeddings (one short input)")]
SCOPES = [("tenant", "Organization (everyone)"), ("group", "A group"), ("personal", "One user (personal)")]
STATUSES = [("enabled", "Enabled"), ("disabled", "Disabled"), ("auto_disabled", "Auto-disabled")]
FILTERS = ("q", "status", "type", "scope")
TEST_ALL_KIND = "gateway.test_channels"
COPY_SUFFIX = " (copy)"
# The fields a form sends as they are, one string each.
TEXT_FIELDS = (
    "name",
    "base_url",
    "api_version",
    "priority",
    "weight",
    "quota",
    "rate_limit",
    "max_in_flight",
    "test_model",
    "test_kind",
    "scope",
    "owner_id",
    "group_id",
)


def _shaped(form: FormMultiDict, *, creating: bool) -> dict[str, Any]:
    """The form's strings in the API's shapes: lists from lines, mappings from `a=b` lines."""
    data: dict[str, Any] = {name: str(form.get(name) or "").strip() for name in TEXT_FIELDS}
    data["max_in_flight"] = data["max_in_flight"] or "0"  # empty: no limit, on edit too
    data["models"] = lines(form.get("models"))
    data["model_mapping"] = pairs(form.get("model_mapping"))
    keys = lines(form.get("keys"))
    if creating:
        data["type"] = str(form.get("type") or "")
        data["keys"] = keys
        data["keys_from"] = str(form.get("keys_from") or "").strip()
    elif keys:
        data["keys"] = keys  # left empty on edit: the stored keys stay
    return data


def _kept(form: FormMultiDict) -> dict[str, str]:
    """What the page shows again: everything typed but the keys, which are never sent back."""
    return {name: str(value) for name, value in form.items() if name not in ("keys", "csrf_token")}


def _model_request(form: FormMultiDict, channel_id: str) -> ModelListRequest:
    """The "Fetch models" button's question: the form's type, URL and first key, else the stored channel's."""
    data = {
        "type": str(form.get("type") or ""),
        "base_url": str(form.get("base_url") or "").strip(),
        "api_version": str(form.get("api_version") or "").strip(),
        "key": next(iter(lines(form.get("keys"))), ""),
    }
    if channel_id:
        data["channel_id"] = channel_id
    try:
        return parse(ModelListRequest, data)
    except FormInvalid as invalid:
        # The form has one keys field, whose first line (or the stored channel's key) is the key asked with.
        fields = {"key": "keys", "channel_id": "keys"}
        raise FormInvalid({fields.get(name, name): text for name, text in invalid.errors.items()}) from None


def _clone_values(channel: ChannelRead, type_name: str, currency: str) -> dict[str, str]:
    """A new channel's form filled from `channel`; its keys stay stored and are taken only if none are typed."""
    values = _channel_values(channel, type_name, currency)
    return values | {"name": channel.name[: 100 - len(COPY_SUFFIX)] + COPY_SUFFIX, "keys_from": str(channel.id)}


def _channel_values(channel: ChannelRead, type_name: str, currency: str) -> dict[str, str]:
    return {
        "name": channel.name,
        "type": type_name,
        "base_url": channel.base_url or "",
        "api_version": channel.api_version or "",
        "models": "\n".join(channel.models),
        "model_mapping": "\n".join(f"{alias}={upstream}" for alias, upstream in channel.model_mapping.items()),
        "priority": str(channel.priority),
        "weight": str(channel.weight),
        "quota": money_field(channel.quota, currency),
        "rate_limit": str(channel.rate_limit),
        "max_in_flight": str(channel.max_in_flight or ""),
        "test_model": channel.test_model or "",
        "test_kind": channel.test_kind,
        "scope": channel.scope,
        "owner_id": str(channel.owner_id or ""),
        "group_id": str(channel.group_id or ""),
    }


class ChannelPages(Controller):
    path = "/channels"
    dependencies = {"viewer": Provide(provide_admin_viewer), "actor": Provide(provide_viewer_actor)}

    @get("/", summary="Channels")
    async def list_channels(
        self,
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        query = request.query_params
        values = {name: str(query.get(name) or "").strip() for name in FILTERS}
        errors: dict[str, str] = {}
        try:
            filters = parse(ChannelFilter, values)
        except FormInvalid as invalid:
            errors, filters = invalid.errors, ChannelFilter()
        test_job = None
        if job_id := query.get("test_job"):
            try:
                found = await visible_job(db_session, UUID(job_id), user_id=viewer.user.id, is_admin=True)
                test_job = read_as(JobRead, found) if found.kind == TEST_ALL_KIND else None
            except (ValueError, NotFound):
                errors["form"] = "No such test run."
        return page(
            viewer,
            "channels/list.html",
            status_code=400 if errors else 200,
            channels=await channels_with_type_names(db_session, filters),
            filtered=any(values.values()),
            values=values,
            errors=errors,
            types=await provider_types(db_session, echo_enabled=settings.echo_provider_enabled),
            statuses=STATUSES,
            scopes=SCOPES,
            test_job=test_job,
            calls=await admin.calls_per_channel(
                db_session, datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=24)
            ),
        )

    @post("/test-all", summary="Test every channel (a job)")
    async def test_all_channels(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        job, _ = await submit_job(
            db_session,
            job_queue,
            settings,
            tenant_id=viewer.principal.tenant_id,
            kind=TEST_ALL_KIND,
            payload={"channel_ids": None},
            created_by=viewer.user.id,
        )
        return see_other(f"{PORTAL}/channels?{urlencode({'test_job': str(job.id)})}")

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
        notices: list[tuple[str, str]] | None = None,
    ) -> Template:
        types = await provider_types(db_session, echo_enabled=settings.echo_provider_enabled)
        groups = [(str(group.id), group.name) for group, _ in await groups_with_member_counts(db_session)]
        users = [(str(user.id), user.email) for user in await organization_users(db_session)]
        return page(
            viewer,
            "channels/form.html",
            status_code=status_code if errors else 200,
            channel=channel,
            types=types,
            test_kinds=TEST_KINDS,
            scopes=SCOPES,
            groups=[("", "Choose a group"), *groups],
            users=[("", "Choose a user"), *users],
            values=values,
            errors=errors or {},
            notices=notices or [],
        )

    async def _fetched_models_page(
        self,
        channel_admin: ChannelAdmin,
        viewer: Viewer,
        db_session: AsyncSession,
        settings: Settings,
        form: FormMultiDict,
        *,
        channel: ChannelRead | None,
        values: dict[str, str],
    ) -> Template:
        """The form again with the provider's models in the models field (the no-script "Fetch models")."""
        async with FormSubmission(db_session) as submission:
            # A clone with no key typed asks with its source's stored key.
            asked_with = str(channel.id) if channel is not None else str(form.get("keys_from") or "")
            fetched = await channel_admin.fetch_models(_model_request(form, asked_with))
        if submission.refused:
            return await self._form_page(
                viewer,
                db_session,
                settings,
                channel=channel,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        notices = [("ok", f"The provider lists {len(fetched.models)} models; remove the ones not to serve, then save.")]
        if lines(form.get("keys")):
            notices.append(("warn", "Type the API key again before saving: keys are never sent back to the page."))
        return await self._form_page(
            viewer,
            db_session,
            settings,
            channel=channel,
            values=values | {"models": "\n".join(fetched.models)},
            notices=notices,
        )

    @get("/new", summary="Add a channel (or clone one: ?clone=<id>)")
    async def new_channel(
        self,
        secret_box: NamedDependency[SecretBox],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        clone: FromQuery[UUID | None] = None,
    ) -> Template:
        if clone is not None:
            source, type_name = await admin.channel_with_type(db_session, clone)
            values = _clone_values(
                admin.channel_read(source, type_name, secret_box), type_name, viewer.organization.currency
            )
            return await self._form_page(viewer, db_session, settings, channel=None, values=values)
        defaults = {"priority": "1", "weight": "1", "quota": "", "rate_limit": "0", "type": "openai"}
        return await self._form_page(viewer, db_session, settings, channel=None, values=defaults | {"scope": "tenant"})

    @post("/new", summary="Add a channel")
    async def create_channel(
        self,
        channel_admin: NamedDependency[ChannelAdmin],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = await request.form()
        values = _kept(form)
        if form.get("intent") == "fetch_models":
            return await self._fetched_models_page(
                channel_admin, viewer, db_session, settings, form, channel=None, values=values
            )
        async with FormSubmission(db_session) as submission:
            await channel_admin.create(parse_with_money(ChannelCreate, _shaped(form, creating=True), ("quota",)))
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
        shown = admin.channel_read(channel, type_name, secret_box)
        return await self._form_page(
            viewer,
            db_session,
            settings,
            channel=shown,
            values=_channel_values(shown, type_name, viewer.organization.currency),
        )

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
        form = await request.form()
        values = _kept(form) | {"type": type_name}
        if form.get("intent") == "fetch_models":
            return await self._fetched_models_page(
                channel_admin, viewer, db_session, settings, form, channel=shown, values=values
            )
        async with FormSubmission(db_session) as submission:
            await channel_admin.update(
                channel, parse_with_money(ChannelUpdate, _shaped(form, creating=False), ("quota",))
            )
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
