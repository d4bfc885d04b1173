"""Portal settings (admins): organization name and currency, security policy, OAuth providers, memory and chat,
the response cache, the hosts knowledge documents may be fetched from."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.oauth import oauth_redirect_uri
from app.auth.oauth_providers import OAuthProviderService, existing_oauth_provider, list_oauth_providers
from app.auth.schemas import OAuthProviderCreate, OAuthProviderUpdate
from app.chat import services as chat_services
from app.chat.schemas import ChatDefaults
from app.gateway import admin as gateway_admin
from app.gateway.admin import PriceAdmin, ResponseCacheAdmin
from app.gateway.engine import Gateway
from app.gateway.schemas import ResponseCacheSettings
from app.jobs import services as jobs
from app.memory import services as memory_services
from app.memory.schemas import MemorySettings
from app.observability.middleware import client_context
from app.portal.budget_forms import budget_form, submit_budget
from app.portal.forms import FormInvalid, FormSubmission, lines, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, see_other, viewer_actor
from app.redis_client import RedisDependency
from app.schemas import read_as
from app.settings import Settings
from app.tenants.budgets import BudgetService
from app.tenants.money import CURRENCIES
from app.tenants.plans import plan_usage
from app.tenants.schemas import OrganizationUpdate, TenantPolicyUpdate
from app.tenants.services import change_tenant_policy, own_organization, tenant_policy, update_organization

SETTINGS = f"{PORTAL}/settings"
OAUTH_KINDS = [("oidc", "OpenID Connect (discovery URL)"), ("google", "Google"), ("github", "GitHub")]
# The selects of models, and what choosing none means for each.
MODEL_FIELDS = {
    "llm_model": "None: no facts are extracted",
    "embedding_model": "None: memories are searched by their words only",
    "rerank_model": "None: searches keep their own order",
    "default_model": "None: every new conversation names its model",
}
UNSERVED = "Choose a model that one of your enabled channels serves."
SAVED = {
    "organization": "The organization's name and currency are saved.",
    "policy": "The security policy is saved.",
    "oauth": "The OAuth provider is saved.",
    "oauth_removed": "The OAuth provider is removed; its users sign in with a password again.",
    "defaults": "The memory and chat defaults are saved.",
    "new_user_budget": "The budget and policy of new users are saved.",
    "response_cache": "The response cache settings are saved.",
    "knowledge_urls": "The hosts knowledge documents may be fetched from are saved.",
}
RESPONSE_CACHE_FIELDS = ("ttl_seconds", "max_entry_bytes", "hit_cost_fraction")


class ProviderHeading(msgspec.Struct, frozen=True):
    """What the provider form shows of the stored row: plain values, still readable after a rollback."""

    id: UUID
    provider_name: str
    kind: str
    redirect_uri: str


def _model_choices(served: list[str], stored: str, none_label: str) -> list[tuple[str, str]]:
    """The served models, plus the saved one even if no channel serves it any more (saving must not drop it)."""
    choices = [("", none_label)] + [(model, model) for model in served]
    if stored and stored not in served:
        choices.append((stored, f"{stored} (no enabled channel serves it)"))
    return choices


class OrganizationForm(OrganizationUpdate, kw_only=True):
    """The organization form: the API's body, with the name that the form always carries."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


def _stored_defaults(memory: MemorySettings, chat: ChatDefaults) -> dict[str, Any]:
    return {
        "enabled": memory.enabled,
        "llm_model": memory.llm_model or "",
        "embedding_model": memory.embedding_model or "",
        "association_threshold": str(memory.association_threshold),
        "chat_memories": str(memory.chat_memories),
        "language": memory.language,
        "rerank_model": memory.rerank_model or "",
        "rerank_candidates": str(memory.rerank_candidates),
        "default_model": chat.default_model or "",
    }


def _parsed_defaults(values: dict[str, Any]) -> tuple[MemorySettings, ChatDefaults]:
    """Both structs from one form, every wrong field reported at once."""
    # Left out, these would silently take their defaults: on a form, empty is a mistake.
    errors = {
        name: "This field is required."
        for name in ("association_threshold", "chat_memories", "rerank_candidates")
        if not values[name]
    }
    memory = MemorySettings()
    chat = ChatDefaults()
    try:
        memory = parse(MemorySettings, values)
    except FormInvalid as invalid:
        errors |= invalid.errors
    try:
        chat = parse(ChatDefaults, values)
    except FormInvalid as invalid:
        errors |= invalid.errors
    if errors:
        raise FormInvalid(errors)
    return memory, chat


def _provider_values(form: dict[str, Any]) -> dict[str, Any]:
    """What the provider form shows again after an error: everything but the client secret."""
    values: dict[str, Any] = {
        name: str(form.get(name) or "").strip()
        for name in ("name", "kind", "client_id", "discovery_url", "display_name", "scopes")
    }
    values["is_enabled"] = "is_enabled" in form
    return values


def _provider_data(form: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    values = _provider_values(form)
    data: dict[str, Any] = {name: values[name] for name in ("client_id", "discovery_url", "display_name")}
    data["scopes"] = lines(values["scopes"])
    secret = str(form.get("client_secret") or "").strip()
    if creating:
        data |= {"name": values["name"], "kind": values["kind"], "client_secret": secret}
    else:
        data["is_enabled"] = values["is_enabled"]
        if secret:
            data["client_secret"] = secret  # left empty on edit: the stored secret stays
    return data


class SettingsPages(Controller):
    path = "/settings"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    async def _settings_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        *,
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
        notices: list[tuple[str, str]] | None = None,
    ) -> Template:
        organization = await own_organization(db_session, viewer.organization.id)
        policy = tenant_policy(organization)
        memory_settings = await memory_services.memory_settings(db_session)
        stored = _stored_defaults(memory_settings, await chat_services.chat_defaults(db_session))
        served = await gateway_admin.served_models(db_session)
        new_user_budget = await budget_form(db_session, "new_user", None, organization.currency)
        response_cache = await gateway_admin.response_cache_settings(db_session)
        return page(
            viewer,
            "settings/page.html",
            status_code=status_code if errors else 200,
            values={
                "name": organization.name,
                "currency": organization.currency,
                "require_mfa_for_admins": policy.require_mfa_for_admins,
                "allow_self_signup": policy.allow_self_signup,
                "response_retention_days": str(policy.response_retention_days),
                "knowledge_url_hosts": "\n".join(policy.knowledge_url_hosts),
                **stored,
                **new_user_budget.values,
                **{f"cache_{name}": value for name, value in msgspec.to_builtins(response_cache).items()},
                **(values or {}),
            },
            errors=errors or {},
            notices=notices or [],
            model_choices={
                field: _model_choices(served, stored[field], none_label) for field, none_label in MODEL_FIELDS.items()
            },
            currencies=[(code, f"{code} — {currency.name}") for code, currency in CURRENCIES.items()],
            languages=[
                (language, language.capitalize())
                for language in await memory_services.text_search_languages(db_session)
            ],
            providers=await list_oauth_providers(db_session),
            priced_models=len(await gateway_admin.own_prices(db_session)),
            memory_status=memory_services.memory_status(memory_settings),
            new_user_budget=new_user_budget,
            plan=await plan_usage(db_session, viewer.user.id),
        )

    @get("/", summary="Settings")
    async def show_settings(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        saved: FromQuery[str | None] = None,
        reembed: FromQuery[UUID | None] = None,
    ) -> Template:
        notices = [("ok", SAVED[saved])] if saved and saved in SAVED else []
        reembed_status = await jobs.job_status(db_session, reembed, kind="memory.reembed") if reembed else None
        if reembed_status is not None:
            notices.append(
                (
                    "info",
                    f"The embedding model changed, so a re-embedding job was started ({reembed_status}). "
                    "Until it has finished, memories stored before are found by their words only.",
                )
            )
        return await self._settings_page(viewer, db_session, notices=notices)

    @post("/organization", summary="Rename the organization or change its currency")
    async def update_organization(
        self,
        price_admin: NamedDependency[PriceAdmin],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = {"name": str(form.get("name") or "").strip(), "currency": str(form.get("currency") or "USD")}
        async with FormSubmission(db_session) as submission:
            organization = await own_organization(db_session, viewer.organization.id)
            currency = organization.currency
            await update_organization(
                db_session,
                organization,
                parse(OrganizationForm, values),
                actor=viewer.user.email,
                actor_user_id=viewer.user.id,
                client=client_context(request),
            )
        if submission.refused:
            return await self._settings_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        if organization.currency != currency:
            await price_admin.currency_changed()  # the built-in prices apply, or stop applying, at once
        else:
            await db_session.commit()
        return see_other(f"{SETTINGS}?saved=organization#organization")

    @post("/new-user-budget", summary="Set the budget and policy new users start with")
    async def set_new_user_budget(
        self,
        viewer: NamedDependency[Viewer],
        budgets: NamedDependency[BudgetService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        values, submission = await submit_budget(request, viewer, budgets, db_session, "new_user", None)
        if submission.refused:
            return await self._settings_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{SETTINGS}?saved=new_user_budget#budget")

    @post("/response-cache", summary="Change the response cache settings")
    async def change_response_cache(
        self,
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        redis: RedisDependency,
        gateway: NamedDependency[Gateway],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = await request.form()
        # The fields are named `cache_...` on the page (one form among several); the settings' own names here.
        values: dict[str, Any] = {name: str(form.get(f"cache_{name}") or "").strip() for name in RESPONSE_CACHE_FIELDS}
        values |= {"enabled": "cache_enabled" in form, "cache_sampled": "cache_cache_sampled" in form}
        async with FormSubmission(db_session) as submission:
            try:
                data = parse(ResponseCacheSettings, values)
            except FormInvalid as invalid:
                raise FormInvalid({f"cache_{name}": message for name, message in invalid.errors.items()}) from None
            service = ResponseCacheAdmin(
                db_session,
                tenant_id=viewer.principal.tenant_id,
                redis=redis,
                catalog=gateway.catalog,
                actor=viewer_actor(viewer, request),
            )
            await service.set(data)
        if submission.refused:
            return await self._settings_page(
                viewer,
                db_session,
                values={f"cache_{name}": value for name, value in values.items()},
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{SETTINGS}?saved=response_cache#response-cache")

    @post("/policy", summary="Change the security policy")
    async def change_policy(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template | Response[None]:
        form = dict(await request.form())
        # An unticked checkbox is not sent at all: absent means off.
        values: dict[str, Any] = {
            "require_mfa_for_admins": "require_mfa_for_admins" in form,
            "allow_self_signup": "allow_self_signup" in form,
        }
        # The page always sends the retention: sent empty, it is a mistake; not sent at all, it keeps its value.
        if "response_retention_days" in form:
            values["response_retention_days"] = str(form["response_retention_days"]).strip()
        async with FormSubmission(db_session) as submission:
            if values.get("response_retention_days") == "":
                raise FormInvalid({"response_retention_days": "This field is required."})
            organization = await own_organization(db_session, viewer.organization.id)
            await change_tenant_policy(
                db_session,
                organization,
                parse(TenantPolicyUpdate, values),
                actor=viewer.user.email,
                actor_user_id=viewer.user.id,
                client=client_context(request),
            )
        if submission.refused:
            return await self._settings_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        await db_session.commit()
        return see_other(f"{SETTINGS}?saved=policy#policy")

    @post("/knowledge-urls", summary="Change the hosts knowledge documents may be fetched from by URL")
    async def change_knowledge_url_hosts(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession], request: PortalRequest
    ) -> Template | Response[None]:
        form = await request.form()
        values = {"knowledge_url_hosts": str(form.get("knowledge_url_hosts") or "")}
        async with FormSubmission(db_session) as submission:
            organization = await own_organization(db_session, viewer.organization.id)
            await change_tenant_policy(
                db_session,
                organization,
                parse(TenantPolicyUpdate, {"knowledge_url_hosts": lines(values["knowledge_url_hosts"])}),
                actor=viewer.user.email,
                actor_user_id=viewer.user.id,
                client=client_context(request),
            )
        if submission.refused:
            return await self._settings_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        await db_session.commit()
        return see_other(f"{SETTINGS}?saved=knowledge_urls#knowledge-urls")

    @post("/defaults", summary="Change the memory and chat defaults")
    async def change_defaults(
        self,
        job_queue: NamedDependency[RedisQueue],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values: dict[str, Any] = {
            name: str(form.get(name) or "").strip()
            for name in ("association_threshold", "chat_memories", "rerank_candidates", "language", *MODEL_FIELDS)
        }
        values["enabled"] = "enabled" in form
        async with FormSubmission(db_session) as submission:
            memory, chat = _parsed_defaults(values)
            stored = _stored_defaults(
                await memory_services.memory_settings(db_session), await chat_services.chat_defaults(db_session)
            )
            served = await gateway_admin.served_models(db_session)
            unserved = {
                field: UNSERVED
                for field in MODEL_FIELDS
                if values[field] and values[field] not in served and values[field] != stored[field]
            }
            if unserved:
                raise FormInvalid(unserved)
            await chat_services.save_chat_defaults(db_session, chat, actor_user_id=viewer.user.id)
            _, reembed_job = await memory_services.change_memory_settings(
                db_session,
                job_queue,
                settings,
                tenant_id=viewer.principal.tenant_id,
                actor_user_id=viewer.user.id,
                data=memory,
            )
        if submission.refused:
            return await self._settings_page(
                viewer, db_session, values=values, errors=submission.errors, status_code=submission.status_code
            )
        reembed = f"&reembed={reembed_job.id}" if reembed_job else ""
        return see_other(f"{SETTINGS}?saved=defaults{reembed}#defaults")

    async def _provider_page(
        self,
        viewer: Viewer,
        settings: Settings,
        *,
        provider: ProviderHeading | None,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        return page(
            viewer,
            "settings/oauth_form.html",
            status_code=status_code if errors else 200,
            provider=provider,
            kinds=OAUTH_KINDS,
            redirect_uri=provider.redirect_uri if provider else oauth_redirect_uri(settings),
            values=values,
            errors=errors or {},
        )

    @get("/oauth/new", summary="Add an OAuth provider")
    async def new_provider(
        self, settings: NamedDependency[Settings], viewer: NamedDependency[Viewer], request: PortalRequest
    ) -> Template:
        return await self._provider_page(viewer, settings, provider=None, values={"kind": "oidc"})

    @post("/oauth/new", summary="Add an OAuth provider")
    async def create_provider(
        self,
        oauth_providers: NamedDependency[OAuthProviderService],
        settings: NamedDependency[Settings],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        form = dict(await request.form())
        values = _provider_values(form)
        async with FormSubmission(db_session) as submission:
            await oauth_providers.create(
                viewer_actor(viewer, request),
                viewer.principal.tenant_id,
                parse(OAuthProviderCreate, _provider_data(form, creating=True)),
            )
        if submission.refused:
            return await self._provider_page(
                viewer,
                settings,
                provider=None,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{SETTINGS}?saved=oauth#oauth")

    @get("/oauth/{provider_id:uuid}", summary="Edit an OAuth provider")
    async def edit_provider(
        self,
        settings: NamedDependency[Settings],
        provider_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        provider = await existing_oauth_provider(db_session, provider_id)
        heading = read_as(ProviderHeading, provider)
        values = {
            "client_id": provider.client_id,
            "discovery_url": provider.discovery_url or "",
            "display_name": provider.display_name or "",
            "scopes": "\n".join(provider.scopes),
            "is_enabled": provider.is_enabled,
        }
        return await self._provider_page(viewer, settings, provider=heading, values=values)

    @post("/oauth/{provider_id:uuid}", summary="Save an OAuth provider")
    async def update_provider(
        self,
        settings: NamedDependency[Settings],
        oauth_providers: NamedDependency[OAuthProviderService],
        provider_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        provider = await existing_oauth_provider(db_session, provider_id)
        heading = read_as(ProviderHeading, provider)
        form = dict(await request.form())
        values = _provider_values(form)
        async with FormSubmission(db_session) as submission:
            await oauth_providers.update(
                viewer_actor(viewer, request),
                provider.id,
                parse(OAuthProviderUpdate, _provider_data(form, creating=False)),
            )
        if submission.refused:
            return await self._provider_page(
                viewer,
                settings,
                provider=heading,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{SETTINGS}?saved=oauth#oauth")

    @post("/oauth/{provider_id:uuid}/delete", summary="Remove an OAuth provider")
    async def remove_provider(
        self,
        provider_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        oauth_providers: NamedDependency[OAuthProviderService],
        request: PortalRequest,
    ) -> Response[None]:
        await oauth_providers.delete(viewer_actor(viewer, request), provider_id)
        return see_other(f"{SETTINGS}?saved=oauth_removed#oauth")
