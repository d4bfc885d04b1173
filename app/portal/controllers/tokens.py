"""Portal pages for API keys: list with usage, issue (the key shown once), change limits (quota in money, channels
and models picked from what the owner may use), revoke."""

from __future__ import annotations

import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.gateway import admin
from app.gateway.admin import TokenAdmin, keys_with_owner_emails
from app.gateway.schemas import TokenCreate, TokenRead, TokenUpdate
from app.portal.forms import FormInvalid, FormSubmission, lines, money_field, parse_with_money
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, provide_viewer_actor, see_other
from app.settings import DEFAULT_PUBLIC_URL, Settings
from app.tenants.budgets import budgets_of_member
from app.tenants.services import organization_users

T = TypeVar("T", bound=msgspec.Struct)

CACHE_MODES = [
    ("inherit", "As the organization's setting"),
    ("on", "On for this key"),
    ("off", "Off for this key"),
]
BUDGET_PERIODS = [
    ("none", "Total (never resets)"),
    ("daily", "Per day"),
    ("weekly", "Per week (from Monday)"),
    ("monthly", "Per month"),
]


def _expiry(value: str) -> str:
    """The form's `datetime-local` value (labelled UTC) as an ISO timestamp; empty stays empty."""
    if not value:
        return ""
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value  # left for the parser to refuse next to the field
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.isoformat()


def _base_url(settings: Settings, request: PortalRequest) -> str:
    """Where programs reach Lyss: LYSS_PUBLIC_URL when the operator set it, else the address this page came on."""
    if settings.public_url != DEFAULT_PUBLIC_URL:
        return settings.public_url
    return str(request.base_url).rstrip("/")


def _example_model(allowed_models: list[str], served: list[str]) -> str:
    """A model the new key may call, for the examples: the demo's `echo` first, since it needs no provider."""
    callable_models = [model for model in served if not allowed_models or model in allowed_models]
    if "echo" in callable_models:
        return "echo"
    return (callable_models or allowed_models or ["gpt-4o-mini"])[0]


def _parsed(struct_type: type[T], form: FormMultiDict) -> T:
    """The form as `struct_type`: the quota typed as money becomes credits (empty: unlimited); the allowed
    channels and models are the boxes ticked. Every wrong field gets its message, the quota's included."""
    data: dict[str, Any] = {
        name: str(form.get(name) or "").strip() for name in ("name", "quota", "rpm_limit", "tpm_limit", "budget_period")
    }
    if "response_cache" in form:
        data["response_cache"] = str(form["response_cache"])
    for name in ("max_concurrent", "max_streams"):
        data[name] = str(form.get(name) or "").strip() or "0"  # empty: no limit, on edit too
    data["allowed_channels"] = [str(value) for value in form.getall("allowed_channels", [])]
    data["allowed_models"] = [str(value) for value in form.getall("allowed_models", [])]
    data["allowed_ips"] = lines(form.get("allowed_ips"))
    data["expires_at"] = _expiry(str(form.get("expires_at") or "").strip())
    if form.get("user_id"):
        data["user_id"] = str(form["user_id"])
    return parse_with_money(struct_type, data, ("quota",))


def _kept(form: FormMultiDict) -> dict[str, Any]:
    """What the page shows again after a refusal, the ticked boxes as lists."""
    values: dict[str, Any] = {name: str(value) for name, value in form.items() if name != "csrf_token"}
    for name in ("allowed_channels", "allowed_models"):
        values[name] = [str(value) for value in form.getall(name, [])]
    return values


def _owner(values: dict[str, Any], viewer: Viewer) -> UUID:
    """Whose channels a new key's form lists: the owner chosen (admins), else the viewer."""
    try:
        return UUID(str(values.get("user_id") or viewer.user.id))
    except ValueError:
        return viewer.user.id


class TokenPages(Controller):
    path = "/tokens"
    dependencies = {"viewer": Provide(provide_viewer), "actor": Provide(provide_viewer_actor)}

    @get("/", summary="API keys")
    async def list_tokens(self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]) -> Template:
        tokens = await keys_with_owner_emails(db_session, None if viewer.is_admin else viewer.user.id)
        budgets = await budgets_of_member(db_session, viewer.user.id)
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=24)
        calls = await admin.calls_per_key(db_session, since)
        return page(viewer, "tokens/list.html", tokens=tokens, budgets=budgets, calls=calls)

    async def _form_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        *,
        token: TokenRead | None,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        users = []
        if viewer.is_admin and token is None:
            users = [(str(user.id), user.email) for user in await organization_users(db_session)]
        usable = await admin.channels_usable_by(db_session, token.user_id if token else _owner(values, viewer))
        channels = [(str(channel.id), channel.name) for channel in usable]
        models = sorted({model for channel in usable for model in channel.models})
        chosen_channels = list(values.get("allowed_channels") or [])
        chosen_models = list(values.get("allowed_models") or [])
        known = dict(channels)
        return page(
            viewer,
            "tokens/form.html",
            status_code=status_code if errors else 200,
            token=token,
            users=users,
            periods=BUDGET_PERIODS,
            cache_modes=CACHE_MODES,
            values=values,
            errors=errors or {},
            currency=viewer.organization.currency,
            # Choices no longer offered (a removed channel, a model no channel serves) stay ticked until unticked.
            channel_choices=channels
            + [(value, f"{value} (no longer available)") for value in chosen_channels if value not in known],
            model_choices=[(model, model) for model in models]
            + [(value, f"{value} (no longer served)") for value in chosen_models if value not in models],
        )

    @get("/new", summary="Issue an API key")
    async def new_token(self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]) -> Template:
        defaults = {"quota": "", "rpm_limit": "0", "tpm_limit": "0", "budget_period": "none"}
        defaults["response_cache"] = "inherit"
        return await self._form_page(viewer, db_session, token=None, values=defaults | {"user_id": str(viewer.user.id)})

    @post("/new", summary="Issue an API key")
    async def create_token(
        self,
        token_admin: NamedDependency[TokenAdmin],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        request: PortalRequest,
    ) -> Template:
        form = await request.form()
        values = _kept(form)
        async with FormSubmission(db_session) as submission:
            data = _parsed(TokenCreate, form)
            owner = data.user_id or viewer.user.id
            if owner != viewer.user.id and not viewer.is_admin:
                raise FormInvalid({"user_id": "You can only issue keys for yourself."})
            token, key = await token_admin.create(owner, data)
        if submission.refused:
            return await self._form_page(
                viewer,
                db_session,
                token=None,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        # Shown in this response only (no redirect, `no-store`): Lyss keeps just the hash.
        return page(
            viewer,
            "tokens/created.html",
            token=token,
            key=key,
            base_url=_base_url(settings, request),
            model=_example_model(list(token.allowed_models), await admin.served_models(db_session)),
        )

    @get("/{token_id:uuid}", summary="Change an API key")
    async def edit_token(
        self, token_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        token = await admin.visible_token(db_session, viewer.principal, token_id)
        values = {
            "name": token.name,
            "quota": money_field(token.quota, viewer.organization.currency),
            "rpm_limit": str(token.rpm_limit),
            "tpm_limit": str(token.tpm_limit),
            "max_concurrent": str(token.max_concurrent or ""),
            "max_streams": str(token.max_streams or ""),
            "budget_period": token.budget_period,
            "response_cache": token.response_cache,
            "allowed_models": list(token.allowed_models),
            "allowed_channels": list(token.allowed_channels),
            "allowed_ips": "\n".join(token.allowed_ips),
            "expires_at": token.expires_at.strftime("%Y-%m-%dT%H:%M") if token.expires_at else "",
        }
        return await self._form_page(viewer, db_session, token=admin.token_read(token), values=values)

    @post("/{token_id:uuid}", summary="Change an API key")
    async def update_token(
        self,
        token_admin: NamedDependency[TokenAdmin],
        token_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        token = await admin.visible_token(db_session, viewer.principal, token_id)
        # Read before the change: a refusal rolls it back, and the page shows the key as it is stored.
        shown = admin.token_read(token)
        form = await request.form()
        values = _kept(form)
        async with FormSubmission(db_session) as submission:
            await token_admin.update(token, _parsed(TokenUpdate, form))
        if submission.refused:
            return await self._form_page(
                viewer,
                db_session,
                token=shown,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/tokens", "key_saved")

    @post("/{token_id:uuid}/revoke", summary="Revoke an API key")
    async def revoke_token(
        self,
        token_admin: NamedDependency[TokenAdmin],
        token_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        await token_admin.revoke(await admin.visible_token(db_session, viewer.principal, token_id))
        return see_other(f"{PORTAL}/tokens", "key_revoked")
