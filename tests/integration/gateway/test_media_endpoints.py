"""Images, speech and moderation through the official `openai` SDK against the mock provider: each billed per
unit at a hand-computed cost, refused before the call when the key cannot pay the worst case or the model has
no unit price (both on the record), failed over between channels, bad input a 400 naming the parameter; and
their per-unit prices, set through the API and the portal, checked field by field."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import add_channel, issue_key, sdk_http, usage_rows
from tests.support.mock_media import PIXEL_PNG
from tests.support.mock_upstream import MockUpstream
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


# Credits: an image 40,000 ($0.04); a request 7; speech $15 per million characters (15 credits a character).
IMAGE, REQUEST, SPEECH_PER_MILLION = 40_000, 7, 15_000_000
MODELS = ["image-test", "moderation-test", "tts-test"]


async def media_key(
    client: Client,
    tenant: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    *,
    channels: tuple[str, ...] = ("media",),
    **key_fields: Any,
) -> tuple[openai.AsyncOpenAI, str]:
    admin = auth_headers(tenant.admin)
    for priority, name in enumerate(reversed(channels)):
        await add_channel(client, admin, upstream, name, models=MODELS, priority=priority)
    prices = {"image_price": IMAGE, "request_price": REQUEST, "speech_price": SPEECH_PER_MILLION}
    for model in MODELS:
        response = await client.put(
            f"/api/model-prices/{model}", json={"prompt_price": 0, "completion_price": 0, **prices}, headers=admin
        )
        assert response.status_code == 200, response.text
    key, _ = await issue_key(client, auth_headers(tenant.user), **key_fields)
    sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0)
    return sdk, key


async def test_images_are_generated_and_billed_per_image_returned(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await media_key(client, tenant_a, upstream, auth_headers)
    answer = await sdk.images.generate(model="image-test", prompt="a red apple", n=3, response_format="b64_json")
    assert [base64.b64decode(image.b64_json or "") for image in answer.data or []] == [PIXEL_PNG] * 3
    # Four asked, two returned: four reserved, two billed.
    upstream.behave("media", images_returned=2)
    urls = await sdk.images.generate(model="image-test", prompt="a pear", n=4, response_format="url")
    assert [image.url for image in urls.data or []] == ["https://images.example/0.png", "https://images.example/1.png"]
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert [(row.endpoint, row.cost, row.completion_tokens, row.details["images"]) for row in rows] == [
        ("images", 3 * IMAGE, 3, 3),
        ("images", 2 * IMAGE, 2, 2),
    ]
    assert upstream.bodies[0] == (
        "media",
        {"model": "image-test", "prompt": "a red apple", "n": 3, "response_format": "b64_json"},
    )


async def test_moderation_is_billed_per_request(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await media_key(client, tenant_a, upstream, auth_headers)
    answer = await sdk.moderations.create(model="moderation-test", input=["a kind word", "an attack"])
    assert [result.flagged for result in answer.results] == [False, True]
    assert answer.results[1].categories.violence is True
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.endpoint, row.model, row.cost, row.details["inputs"]) for row in rows] == [
        ("moderations", "moderation-test", REQUEST, 2)
    ]


async def test_speech_answers_the_providers_audio_billed_per_character(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await media_key(client, tenant_a, upstream, auth_headers)
    text = "Hello, this is Lyss speaking."
    async with sdk.audio.speech.with_streaming_response.create(
        model="tts-test", input=text, voice="alloy", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        audio = await response.read()
    with wave.open(io.BytesIO(audio)) as file:
        assert (file.getnchannels(), file.getframerate()) == (1, 8000)
    rows = await usage_rows(session_maker, tenant_a, 1)
    # 29 characters at 15 credits each (15,000,000 per million).
    assert len(text) == 29
    assert [(row.endpoint, row.cost, row.details["characters"]) for row in rows] == [("speech", 29 * 15, 29)]


async def test_a_key_that_cannot_pay_the_worst_case_is_refused_before_the_call_and_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    # Enough for two images: three could be returned, so a call for three is refused.
    sdk, _ = await media_key(client, tenant_a, upstream, auth_headers, quota=2 * IMAGE)
    with pytest.raises(openai.RateLimitError) as refused:
        await sdk.images.generate(model="image-test", prompt="a red apple", n=3)
    assert "fewer images" in str(refused.value)
    assert sum(upstream.calls.values()) == 0
    answer = await sdk.images.generate(model="image-test", prompt="a red apple", n=2)
    assert len(answer.data or []) == 2
    rows = await usage_rows(session_maker, tenant_a, 2)
    assert sorted((row.endpoint, row.outcome, row.status_code, row.cost) for row in rows) == [
        ("images", "ok", 200, 2 * IMAGE),
        ("images", "refused", 429, 0),
    ]


async def test_a_model_without_the_unit_price_is_refused_and_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await add_channel(client, admin, upstream, "media", models=["image-test"])
    # Token prices only: chat would be billed, images have no price.
    response = await client.put(
        "/api/model-prices/image-test", json={"prompt_price": 1, "completion_price": 1}, headers=admin
    )
    assert response.status_code == 200, response.text
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    refused = await client.post(
        "/v1/images/generations", json={"model": "image-test", "prompt": "a pear"}, headers=bearer(key)
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "model_not_priced"
    assert "price per image" in refused.json()["error"]["message"]
    assert sum(upstream.calls.values()) == 0
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.endpoint, row.outcome, row.details["reason"]) for row in rows] == [("images", "refused", "unpriced")]


async def test_a_failing_channel_fails_over_to_the_next(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await media_key(client, tenant_a, upstream, auth_headers, channels=("broken", "spare"))
    upstream.behave("broken", status=503)
    answer = await sdk.moderations.create(model="moderation-test", input="hello")
    assert answer.results[0].flagged is False
    async with sdk.audio.speech.with_streaming_response.create(model="tts-test", input="hi", voice="alloy") as speech:
        assert speech.headers["x-lyss-channel"] == "spare"
    # The failed channel cools down: the second call goes straight to the spare one.
    assert (upstream.calls["broken"], upstream.calls["spare"]) == (1, 2)
    rows = {row.endpoint: row for row in await usage_rows(session_maker, tenant_a, 2)}
    assert [attempt["channel"] for attempt in rows["moderations"].details["attempts"]] == ["broken", "spare"]
    assert (rows["moderations"].cost, rows["speech"].cost) == (REQUEST, 2 * 15)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/images/generations", {"model": "image-test", "prompt": "x", "n": 11}, "n"),
        ("/v1/images/generations", {"model": "image-test", "prompt": "x", "n": 0}, "n"),
        ("/v1/images/generations", {"model": "image-test"}, "prompt"),
        ("/v1/images/generations", {"model": "image-test", "prompt": "x", "response_format": "gif"}, "response_format"),
        ("/v1/images/generations", {"model": "image-test", "prompt": "x", "stream": True}, "stream"),
        ("/v1/moderations", {"model": "moderation-test", "input": []}, "input"),
        ("/v1/moderations", {"input": "hello"}, "model"),
        ("/v1/audio/speech", {"model": "tts-test", "input": "x" * 4097, "voice": "alloy"}, "input"),
        ("/v1/audio/speech", {"model": "tts-test", "input": "hi"}, "voice"),
        ("/v1/audio/speech", {"model": "tts-test", "input": "hi", "voice": "alloy", "speed": 9}, "speed"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter_and_reaches_no_provider(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    _, key = await media_key(client, tenant_a, upstream, auth_headers)
    response = await client.post(path, json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text
    assert sum(upstream.calls.values()) == 0


async def test_a_body_that_is_not_json_is_refused_by_its_content_type(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    _, key = await media_key(client, tenant_a, upstream, auth_headers)
    response = await client.post(
        "/v1/images/generations", content=b"prompt=x", headers={**bearer(key), "content-type": "text/plain"}
    )
    assert response.status_code == 400, response.text
    assert "application/json" in response.json()["error"]["message"]
