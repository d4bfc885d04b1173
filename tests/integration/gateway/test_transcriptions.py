"""/v1/audio/transcriptions through the official `openai` SDK against the mock provider: a WAV of known duration
billed at the price per second (the provider's reported duration, rounded up to a credit), the longest the file
can last reserved first (a key that cannot pay it refused, on the record), failed over between channels, and a
malformed or oversized upload refused naming the field."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.dialects.transcription import LOWEST_BITS_PER_SECOND
from app.settings import Settings
from tests.support.clients import AuthHeaders, Client, app_client, bearer
from tests.support.gateway import add_channel, issue_key, sdk_http, usage_rows
from tests.support.mock_media import m4a_stating, tiny_wav, wav_stating
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

MODEL = "whisper-test"
# Credits per second transcribed: 2.5 s cost 17.5 credits, billed 18.
PER_SECOND = 7
SECONDS = 2.5


async def transcription_key(
    client: Client,
    tenant: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    *,
    channels: tuple[str, ...] = ("audio",),
    price: int | None = PER_SECOND,
    **key_fields: Any,
) -> tuple[openai.AsyncOpenAI, str]:
    admin = auth_headers(tenant.admin)
    for priority, name in enumerate(reversed(channels)):
        await add_channel(client, admin, upstream, name, models=[MODEL], priority=priority)
    response = await client.put(
        f"/api/model-prices/{MODEL}",
        json={"prompt_price": 1, "completion_price": 1, "audio_second_price": price},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    key, _ = await issue_key(client, auth_headers(tenant.user), **key_fields)
    sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=sdk_http(client), max_retries=0)
    return sdk, key


async def test_a_wav_is_transcribed_in_each_format_and_billed_its_duration_at_the_price_per_second(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await transcription_key(client, tenant_a, upstream, auth_headers)
    audio = ("speech.wav", tiny_wav(SECONDS), "audio/wav")
    plain = await sdk.audio.transcriptions.create(file=audio, model=MODEL, language="en", temperature=0.2)
    assert plain.text == "2.5 seconds of silence"
    text = await sdk.audio.transcriptions.create(file=audio, model=MODEL, response_format="text")
    assert text.strip() == "2.5 seconds of silence"
    verbose = await sdk.audio.transcriptions.create(
        file=audio, model=MODEL, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert (verbose.duration, verbose.language) == (SECONDS, "english")
    # The provider was sent the form as the client wrote it, the file whole.
    name, sent = upstream.bodies[2]
    assert (name, sent["model"], sent["response_format"], sent["file"]) == (
        "audio",
        MODEL,
        "verbose_json",
        {"filename": "speech.wav", "bytes": len(tiny_wav(SECONDS))},
    )
    rows = await usage_rows(session_maker, tenant_a, 3)
    expected = math.ceil(SECONDS * PER_SECOND)
    assert expected == 18
    assert [(row.endpoint, row.outcome, row.cost, row.details["audio_ms"]) for row in rows] == [
        ("transcriptions", "ok", expected, 2500)
    ] * 3


@pytest.mark.parametrize(
    ("filename", "audio"),
    [("long.wav", wav_stating(5.0, 1.0)), ("long.m4a", m4a_stating(5.0, 1.0))],
)
async def test_a_file_whose_header_states_1_s_over_5_s_of_audio_is_reserved_and_billed_the_5_s(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
    filename: str,
    audio: bytes,
) -> None:
    # The text answer reports no duration: the call is billed what was measured from the file, and the provider
    # (which decodes it whole) heard 5 s, not the 1 s the header states.
    sdk, _ = await transcription_key(client, tenant_a, upstream, auth_headers)
    text = await sdk.audio.transcriptions.create(file=(filename, audio), model=MODEL, response_format="text")
    assert text.strip() == "5.0 seconds of silence"
    (row,) = await usage_rows(session_maker, tenant_a, 1)
    assert 5000 <= row.details["reserved_audio_ms"] == row.details["audio_ms"] <= 5100
    assert row.cost == math.ceil(row.details["audio_ms"] * PER_SECOND / 1000) >= 5 * PER_SECOND


async def test_the_text_answer_keeps_its_content_type(
    client: Client, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    _, key = await transcription_key(client, tenant_a, upstream, auth_headers)
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": MODEL, "response_format": "text"},
        files={"file": ("a.wav", tiny_wav(1.0), "audio/wav")},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "1.0 seconds of silence\n"


async def test_a_key_that_cannot_pay_the_longest_the_file_can_last_is_refused_and_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    # 10 credits pay for 1 s (7), not for 2.5 s (18).
    sdk, _ = await transcription_key(client, tenant_a, upstream, auth_headers, quota=10)
    with pytest.raises(openai.RateLimitError) as refused:
        await sdk.audio.transcriptions.create(file=("long.wav", tiny_wav(SECONDS)), model=MODEL)
    assert "shorter recording" in str(refused.value)
    # A file whose duration cannot be read lasts at most its size at the lowest bitrate: 1,500 bytes at
    # 6 kbit/s are 2 s, 14 credits.
    unreadable = b"\x01" * 1500
    assert 1500 * 8 / LOWEST_BITS_PER_SECOND * PER_SECOND == 14
    with pytest.raises(openai.RateLimitError):
        await sdk.audio.transcriptions.create(file=("noise.ogg", unreadable), model=MODEL)
    assert sum(upstream.calls.values()) == 0
    short = await sdk.audio.transcriptions.create(file=("short.wav", tiny_wav(1.0)), model=MODEL)
    assert short.text == "1.0 seconds of silence"
    rows = await usage_rows(session_maker, tenant_a, 3)
    assert sorted((row.endpoint, row.outcome, row.status_code, row.cost) for row in rows) == [
        ("transcriptions", "ok", 200, PER_SECOND),
        ("transcriptions", "refused", 429, 0),
        ("transcriptions", "refused", 429, 0),
    ]


async def test_a_model_without_a_price_per_second_is_refused_and_on_the_record(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await transcription_key(client, tenant_a, upstream, auth_headers, price=None)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk.audio.transcriptions.create(file=("a.wav", tiny_wav(1.0)), model=MODEL)
    assert "price per second of audio transcribed" in str(refused.value)
    assert sum(upstream.calls.values()) == 0
    rows = await usage_rows(session_maker, tenant_a, 1)
    assert [(row.endpoint, row.outcome, row.details["reason"]) for row in rows] == [
        ("transcriptions", "refused", "unpriced")
    ]


async def test_a_failing_channel_fails_over_and_the_upload_is_sent_again(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    sdk, _ = await transcription_key(client, tenant_a, upstream, auth_headers, channels=("broken", "spare"))
    upstream.behave("broken", status=503)
    answer = await sdk.audio.transcriptions.with_raw_response.create(
        file=("a.wav", tiny_wav(SECONDS)), model=MODEL, response_format="verbose_json"
    )
    assert answer.headers["x-lyss-channel"] == "spare"
    assert answer.parse().duration == SECONDS
    assert [(name, body["file"]["bytes"]) for name, body in upstream.bodies] == [
        ("broken", len(tiny_wav(SECONDS))),
        ("spare", len(tiny_wav(SECONDS))),
    ]
    (row,) = await usage_rows(session_maker, tenant_a, 1)
    assert [attempt["channel"] for attempt in row.details["attempts"]] == ["broken", "spare"]
    assert row.cost == math.ceil(SECONDS * PER_SECOND)


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"model": MODEL}, {}, "file"),
        ({"model": MODEL}, {"file": ("a.wav", b"", "audio/wav")}, "file"),
        ({"model": MODEL}, {"audio": ("a.wav", b"RIFF", "audio/wav")}, "file"),
        ({}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "model"),
        ({"model": MODEL, "response_format": "mp3"}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "response_format"),
        ({"model": MODEL, "temperature": "hot"}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "temperature"),
        ({"model": MODEL, "temperature": "2"}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "temperature"),
        ({"model": MODEL, "stream": "true"}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "stream"),
        (
            {"model": MODEL, "timestamp_granularities[]": "char"},
            {"file": ("a.wav", b"RIFF", "audio/wav")},
            "timestamp_granularities[]",
        ),
        ({"model": MODEL, "prompt": "x" * 70_000}, {"file": ("a.wav", b"RIFF", "audio/wav")}, "prompt"),
    ],
)
async def test_a_bad_upload_is_a_400_naming_the_field_and_reaches_no_provider(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    data: dict[str, str],
    files: dict[str, tuple[str, bytes, str]],
    param: str,
) -> None:
    _, key = await transcription_key(client, tenant_a, upstream, auth_headers)
    # httpx sends a form without files url-encoded: the boundary then is one of its own, as a client's.
    response = await client.post(
        "/v1/audio/transcriptions",
        data=data,
        files=files or {"placeholder": (None, b"1")},
        headers=bearer(key),
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text
    assert sum(upstream.calls.values()) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"model": "whisper-test"}', "application/json"),
        (b"--x\r\nContent-Disposition: form-data\r\n\r\nhalf", "multipart/form-data; boundary=x"),
        (b"no boundary here", "multipart/form-data; boundary=x"),
        (b"--x--", "multipart/form-data"),
    ],
)
async def test_a_body_that_is_not_a_well_formed_upload_is_a_400(
    client: Client,
    tenant_a: TenantRows,
    upstream: MockUpstream,
    auth_headers: AuthHeaders,
    content: bytes,
    content_type: str,
) -> None:
    _, key = await transcription_key(client, tenant_a, upstream, auth_headers)
    response = await client.post(
        "/v1/audio/transcriptions", content=content, headers={**bearer(key), "content-type": content_type}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "file", response.text
    assert sum(upstream.calls.values()) == 0


async def test_an_upload_over_the_body_limit_is_a_413_whether_or_not_its_length_is_announced(
    settings: Settings, tenant_a: TenantRows, upstream: MockUpstream, auth_headers: AuthHeaders
) -> None:
    small = msgspec.structs.replace(settings, max_request_body_bytes=4096)
    async with app_client(small) as limited:
        _, key = await transcription_key(limited, tenant_a, upstream, auth_headers)
        announced = await limited.post(
            "/v1/audio/transcriptions",
            data={"model": MODEL},
            files={"file": ("a.wav", tiny_wav(1.0), "audio/wav")},
            headers=bearer(key),
        )
        boundary = "b0undary"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()

        async def streamed() -> AsyncIterator[bytes]:
            yield head
            for _ in range(10):
                yield b"\0" * 1024

        unannounced = await limited.post(
            "/v1/audio/transcriptions",
            content=streamed(),
            headers={**bearer(key), "content-type": f"multipart/form-data; boundary={boundary}"},
        )
    for response in (announced, unannounced):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert "content-length" not in unannounced.request.headers
    assert sum(upstream.calls.values()) == 0
