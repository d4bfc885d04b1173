"""Portal pages for webhooks (admins): endpoints listed, added (secret shown once), edited, tested, removed, and
each endpoint's delivery log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.portal.forms import FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, provide_viewer_actor, see_other
from app.schemas import read_as
from app.tenants.schemas import WebhookCreate, WebhookDeliveryRead, WebhookRead, WebhookUpdate
from app.tenants.webhooks import EVENT_DESCRIPTIONS, WebhookService, existing_webhook, list_webhooks, webhook_deliveries

EVENT_CHOICES = [(kind, description) for kind, description in EVENT_DESCRIPTIONS.items()]


def _shaped(form: Any) -> dict[str, Any]:
    """The form's strings in the API's shapes: the ticked event kinds as a list."""
    data: dict[str, Any] = {name: str(form.get(name) or "").strip() for name in ("url", "description", "secret")}
    data["events"] = [str(kind) for kind in form.getall("events", [])]
    return data


def _values(form: Any) -> dict[str, Any]:
    """What the form shows again after a refusal (never the secret)."""
    return {
        "url": str(form.get("url") or ""),
        "description": str(form.get("description") or ""),
        "events": [str(kind) for kind in form.getall("events", [])],
        "enabled": form.get("enabled") == "on",
    }


class WebhookPages(Controller):
    path = "/webhooks"
    dependencies = {"viewer": Provide(provide_admin_viewer), "actor": Provide(provide_viewer_actor)}

    @get("/", summary="Webhooks")
    async def list_endpoints(
        self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        endpoints = [read_as(WebhookRead, row) for row in await list_webhooks(db_session)]
        return page(viewer, "webhooks/list.html", endpoints=endpoints, events=EVENT_DESCRIPTIONS)

    def _form_page(
        self,
        viewer: Viewer,
        *,
        endpoint: WebhookRead | None,
        values: dict[str, Any],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        return page(
            viewer,
            "webhooks/form.html",
            status_code=status_code if errors else 200,
            endpoint=endpoint,
            event_choices=EVENT_CHOICES,
            values=values,
            errors=errors or {},
        )

    @get("/new", summary="Add a webhook")
    async def new_endpoint(self, viewer: NamedDependency[Viewer]) -> Template:
        return self._form_page(viewer, endpoint=None, values={"events": [], "enabled": True})

    @post("/new", summary="Add a webhook")
    async def create_endpoint(
        self,
        webhooks: NamedDependency[WebhookService],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        form = await request.form()
        async with FormSubmission(db_session) as submission:
            data = parse(WebhookCreate, _shaped(form))
            endpoint, secret = await webhooks.create(viewer.organization.id, data)
            created = read_as(WebhookRead, endpoint)
        if submission.refused:
            values = _values(form)
            return self._form_page(
                viewer, endpoint=None, values=values, errors=submission.errors, status_code=submission.status_code
            )
        return page(viewer, "webhooks/created.html", endpoint=created, secret=secret)

    @get("/{webhook_id:uuid}", summary="Edit a webhook")
    async def edit_endpoint(
        self, webhook_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        endpoint = read_as(WebhookRead, await existing_webhook(db_session, webhook_id))
        values = {
            "url": endpoint.url,
            "description": endpoint.description or "",
            "events": endpoint.events,
            "enabled": endpoint.enabled,
        }
        return self._form_page(viewer, endpoint=endpoint, values=values)

    @post("/{webhook_id:uuid}", summary="Save a webhook")
    async def update_endpoint(
        self,
        webhook_id: FromPath[UUID],
        webhooks: NamedDependency[WebhookService],
        viewer: NamedDependency[Viewer],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        # Read before the change: a refusal rolls it back, and the page shows the endpoint as it is stored.
        endpoint = read_as(WebhookRead, await existing_webhook(db_session, webhook_id))
        form = await request.form()
        async with FormSubmission(db_session) as submission:
            data = parse(WebhookUpdate, _shaped(form))
            # An emptied description is cleared, not kept; the secret field left empty keeps the stored one.
            data = msgspec.structs.replace(
                data, description=data.description or "", enabled=form.get("enabled") == "on"
            )
            await webhooks.update(webhook_id, data)
        if submission.refused:
            return self._form_page(
                viewer,
                endpoint=endpoint,
                values=_values(form),
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/webhooks", "webhook_saved")

    @get("/{webhook_id:uuid}/deliveries", summary="A webhook's delivery log")
    async def deliveries(
        self, webhook_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        endpoint = read_as(WebhookRead, await existing_webhook(db_session, webhook_id))
        rows = [read_as(WebhookDeliveryRead, row) for row in await webhook_deliveries(db_session, webhook_id)]
        return page(viewer, "webhooks/deliveries.html", endpoint=endpoint, deliveries=rows)

    @post("/{webhook_id:uuid}/test", summary="Send a test event")
    async def send_test(
        self,
        webhook_id: FromPath[UUID],
        webhooks: NamedDependency[WebhookService],
        viewer: NamedDependency[Viewer],  # asked for so that the administrators-only check runs
    ) -> Response[None]:
        await webhooks.send_test(webhook_id)
        return see_other(f"{PORTAL}/webhooks/{webhook_id}/deliveries", "webhook_test_sent")

    @post("/{webhook_id:uuid}/delete", summary="Remove a webhook")
    async def remove_endpoint(
        self,
        webhook_id: FromPath[UUID],
        webhooks: NamedDependency[WebhookService],
        viewer: NamedDependency[Viewer],  # asked for so that the administrators-only check runs
    ) -> Response[None]:
        await webhooks.delete(webhook_id)
        return see_other(f"{PORTAL}/webhooks", "webhook_removed")
