"""The mock provider's images, moderation, speech and transcription endpoints (OpenAI's shapes), a small valid
WAV file, and recordings whose header understates how long they play."""

from __future__ import annotations

import base64
import io
import struct
import time
import wave
from typing import TYPE_CHECKING

import av
import numpy
from aiohttp import web

if TYPE_CHECKING:
    from tests.support.mock_upstream import MockUpstream

# A 1x1 transparent PNG: what the mock draws for every prompt.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def tiny_wav(seconds: float = 0.1, rate: int = 8000) -> bytes:
    """A valid mono 16-bit WAV of silence lasting `seconds`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


def wav_stating(seconds: float, stated: float, rate: int = 8000) -> bytes:
    """A WAV of `seconds` of silence whose data chunk's size says it holds only `stated` seconds."""
    audio = tiny_wav(seconds, rate)
    size_at = audio.index(b"data") + 4
    return audio[:size_at] + struct.pack("<I", int(stated * rate) * 2) + audio[size_at + 4 :]


def m4a_stating(seconds: float, stated: float, rate: int = 44100) -> bytes:
    """An AAC recording in M4A of `seconds` of silence whose movie, track and media headers state `stated`."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, int(seconds * rate), 1024):
            frame = av.AudioFrame.from_ndarray(numpy.zeros((1, 1024), numpy.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    audio = bytearray(buffer.getvalue())
    # Version 0 boxes: mvhd and mdhd hold creation, modification, timescale, duration; tkhd holds creation,
    # modification, track id, a reserved word, duration (in the movie's timescale).
    movie_scale = struct.unpack_from(">I", audio, audio.index(b"mvhd") + 16)[0]
    for box, duration_at, scale in (("mvhd", 20, movie_scale), ("tkhd", 24, movie_scale), ("mdhd", 20, None)):
        at = audio.index(box.encode())
        timescale = scale or struct.unpack_from(">I", audio, at + 16)[0]
        struct.pack_into(">I", audio, at + duration_at, int(stated * timescale))
    return bytes(audio)


def heard_seconds(audio: bytes) -> float:
    """How long the audio plays, decoded whole as a provider would (samples over the rate), whatever its header
    states."""
    with av.open(io.BytesIO(audio), "r", options={"ignore_length": "1"}) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate


async def images(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """`n` images (b64_json, or a url when asked), or `images_returned` of them when the behaviour says so."""
    _, behavior, body, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    count = behavior.images_returned if behavior.images_returned is not None else int(body.get("n") or 1)
    if body.get("response_format") == "url":
        data = [{"url": f"https://images.example/{index}.png"} for index in range(count)]
    else:
        data = [{"b64_json": base64.b64encode(PIXEL_PNG).decode(), "revised_prompt": body["prompt"]}] * count
    return web.json_response({"created": int(time.time()), "data": data})


async def moderations(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """Flags an input that says "attack"; one result per input."""
    _, _, body, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    results = []
    for text in inputs:
        flagged = "attack" in str(text)
        results.append(
            {
                "flagged": flagged,
                "categories": {"violence": flagged, "harassment": False},
                "category_scores": {"violence": 0.9 if flagged else 0.01, "harassment": 0.01},
            }
        )
    return web.json_response({"id": "modr-mock", "model": body["model"], "results": results})


async def speech(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """A small WAV whatever the format asked (its content type says so)."""
    _, _, _, failure = await mock._prologue(request)
    if failure is not None:
        return failure
    return web.Response(body=tiny_wav(), content_type="audio/wav")


async def transcriptions(mock: MockUpstream, request: web.Request) -> web.StreamResponse:
    """Decodes the audio it is sent: json (with a duration usage), text or verbose_json (with the duration); its
    form fields, the file's name and size, are kept in `mock.bodies`."""
    name = request.match_info["name"]
    behavior = mock.behaviors.get(name)
    form = await request.post()
    upload = form["file"]
    assert isinstance(upload, web.FileField)
    audio = upload.file.read()
    body = {key: value for key, value in form.items() if isinstance(value, str)}
    mock.calls[name] += 1
    mock.bodies.append((name, {**body, "file": {"filename": upload.filename, "bytes": len(audio)}}))
    if behavior is not None and behavior.status != 200:
        error = {"message": f"scripted failure of {name}", "type": behavior.error_code, "code": behavior.error_code}
        return web.json_response({"error": error}, status=behavior.status)
    duration = heard_seconds(audio)
    text = f"{duration:.1f} seconds of silence"
    response_format = body.get("response_format", "json")
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if response_format == "verbose_json":
        return web.json_response({"task": "transcribe", "language": "english", "duration": duration, "text": text})
    return web.json_response({"text": text, "usage": {"type": "duration", "seconds": duration}})
