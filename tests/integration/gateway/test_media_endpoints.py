"""Images, speech, transcription and moderation: their per-unit prices (set through the API and the portal,
checked field by field)."""

from __future__ import annotations

import pytest

from tests.support.clients import AuthHeaders, Client
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

UNIT_PRICES = {"image_price": 40_000, "audio_second_price": 100, "speech_price": 15_000_000, "request_price": 7}


async def test_unit_prices_are_stored_shown_and_optional(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    admin = auth_headers(tenant_a.admin)
    body = {"prompt_price": 0, "completion_price": 0, **UNIT_PRICES}
    saved = await client.put("/api/model-prices/media-model", json=body, headers=admin)
    assert saved.status_code == 200, saved.text
    assert {name: saved.json()[name] for name in UNIT_PRICES} == UNIT_PRICES
    # Setting the token prices again without the unit prices clears them: a PUT is the whole price.
    again = await client.put(
        "/api/model-prices/media-model", json={"prompt_price": 1, "completion_price": 1}, headers=admin
    )
    assert again.status_code == 200, again.text
    listing = {row["model"]: row for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert {name: listing["media-model"][name] for name in UNIT_PRICES} == dict.fromkeys(UNIT_PRICES)


@pytest.mark.parametrize("wrong", [-1, "cheap", 1.5, 2**63])
async def test_a_wrong_unit_price_is_a_400_naming_it_and_nothing_is_saved(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders, wrong: object
) -> None:
    admin = auth_headers(tenant_a.admin)
    for field in UNIT_PRICES:
        response = await client.put(
            "/api/model-prices/media-model",
            json={"prompt_price": 1, "completion_price": 1, field: wrong},
            headers=admin,
        )
        assert response.status_code == 400, response.text
        assert field in response.json()["detail"] + str(response.json().get("extra", "")), response.text
    own = [row for row in (await client.get("/api/model-prices", headers=admin)).json() if row["source"] == "tenant"]
    assert own == []


async def test_the_portal_price_form_takes_unit_prices_and_shows_a_wrong_one_by_its_field(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    token = await sign_in(client, tenant_a, tenant_a.admin.email)
    form = {"csrf_token": token, "model": "media-model", "prompt_price": "0", "completion_price": "0"}
    wrong = await client.post("/portal/prices", data={**form, "image_price": "0.04", "speech_price": "a lot"})
    assert wrong.status_code == 400
    assert "is not an amount of money" in (field_error(wrong.text, "speech_price") or "")
    assert field_error(wrong.text, "image_price") is None
    admin = auth_headers(tenant_a.admin)
    models = {row["model"] for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert "media-model" not in models
    saved = await client.post(
        "/portal/prices",
        data={**form, "image_price": "0.04", "audio_second_price": "0.0001", "speech_price": "15", "request_price": ""},
    )
    assert saved.status_code in (200, 303), saved.text
    listing = {row["model"]: row for row in (await client.get("/api/model-prices", headers=admin)).json()}
    assert {name: listing["media-model"][name] for name in UNIT_PRICES} == {
        "image_price": 40_000,
        "audio_second_price": 100,
        "speech_price": 15_000_000,
        "request_price": None,
    }
    page = (await client.get("/portal/prices", params={"q": "media-model"})).text
    assert '$0.04 <span class="hint">per image</span>' in page
    assert '$15.00 <span class="hint">per 1M characters spoken</span>' in page
    assert "per request</span>" not in page
    # "Change" starts the form from the saved unit prices.
    change = (await client.get("/portal/prices", params={"model": "media-model"})).text
    assert 'id="image_price" name="image_price" type="text" value="$0.04"' in change
