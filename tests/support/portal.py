"""The portal as a browser without JavaScript sees it: signing in through the form, tokens and errors in pages."""

from __future__ import annotations

import re

from tests.support.clients import Client
from tests.support.tenants import TEST_PASSWORD, TenantRows

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


async def sign_in(client: Client, tenant: TenantRows, email: str) -> str:
    """Sign in through the portal's form; return the CSRF token its pages carry."""
    form_page = await client.get("/portal/login")
    form_token = FORM_TOKEN.search(form_page.text)
    assert form_token, form_page.text
    response = await client.post(
        "/portal/login",
        data={"tenant": tenant.slug, "email": email, "password": TEST_PASSWORD, "form_token": form_token[1]},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal/"
    dashboard = await client.get("/portal/")
    assert dashboard.status_code == 200
    token = CSRF.search(dashboard.text)
    assert token
    return token[1]


def field_error(html: str, field: str) -> str | None:
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    return found[1] if found else None
