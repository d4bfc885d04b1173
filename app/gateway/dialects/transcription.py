"""/v1/audio/transcriptions in OpenAI's shape: the multipart upload read within the body limit, the longest the
audio plays as FFmpeg demuxes it (what is reserved) and the duration the provider reports (what is billed)."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
import msgspec
import multipart

from app.gateway import errors

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# A file whose duration cannot be read lasts at most its size at this bitrate: 6 kbit/s is Opus's lowest, the
# smallest of the formats OpenAI takes (flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm), so no real file of
# that size plays longer.
LOWEST_BITS_PER_SECOND = 6000
# The demuxers a file may be read with: those of the formats OpenAI takes. FFmpeg picks one by probing the bytes,
# and some of its others (HLS, concat…) would open further URLs or files named inside the upload.
DEMUXERS = "wav,mp3,flac,ogg,mov,mp4,m4a,matroska,webm,aac"
# Bounds on reading one file, so that a hostile one cannot hold a worker thread: a packet is at least a byte, so
# the count stops only a file of empty packets; the time stops one that is slow to demux. A file cut off by
# either is bounded by the larger of what was read and its size at the lowest bitrate.
MAX_PACKETS = 500_000
MAX_DEMUX_SECONDS = 5.0
# Form fields besides the file: OpenAI's take a handful (language, prompt, include[], timestamp_granularities[]…).
MAX_FIELDS = 64
MAX_FIELD_BYTES = 64 * 1024
# What a transcription is counted in: milliseconds, so that a call is billed its exact duration at the price
# per second, rounded up to a credit once (a thousand of them make the priced second).
UNITS_PER_SECOND = 1000

Receive = Callable[[], Awaitable[Any]]


class Upload(msgspec.Struct):
    """A transcription request as read: its form fields as sent (re-sent to the provider, in order), the file."""

    fields: list[tuple[str, str]]
    filename: str
    file_type: str
    file: bytes
    model: str
    response_format: str


def boundary_of(content_type: bytes) -> str:
    """The multipart boundary of a `Content-Type` header, or a 400 saying how to send the body."""
    kind, options = multipart.parse_options_header(content_type.decode("latin-1"))
    boundary = str(options.get("boundary", ""))
    if kind.lower() != "multipart/form-data" or not boundary or len(boundary) > 200:
        raise errors.invalid_request(
            "Send the body as multipart/form-data with a boundary, as OpenAI's SDKs do.", param="file"
        )
    return boundary


async def read_upload(receive: Receive, content_type: bytes, max_bytes: int, too_large: errors.GatewayError) -> Upload:
    """Parse the body as it arrives, stopping at `max_bytes` (the 413 `too_large`), then check every field."""
    boundary = boundary_of(content_type)
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, str, str, bytes]] = []
    size = 0
    try:
        with multipart.PushMultipartParser(
            boundary, max_segment_count=MAX_FIELDS + 1, max_header_size=4096, strict=True
        ) as parser:
            segment: multipart.MultipartSegment | None = None
            parts: list[bytes] = []
            while not parser.closed:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise errors.invalid_request("The client went away before sending the whole body.")
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                more = bool(message.get("more_body", False))
                if not chunk and more:
                    continue
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        segment, parts = event, []
                    elif event is not None:
                        parts.append(event)
                        _check_field_size(segment)
                    elif segment is not None:
                        _keep(segment, b"".join(parts), fields, files)
                if not more:
                    break
    except multipart.MultipartError as error:
        problem = errors.shown(str(error), 200)
        raise errors.invalid_request(f"We could not parse the multipart body: {problem}.", param="file") from None
    return _checked(fields, files)


def _check_field_size(segment: multipart.MultipartSegment | None) -> None:
    # A text field is held whole before it is checked: one as long as the body would take all of it in memory.
    if segment is not None and segment.filename is None and segment.bytes_received > MAX_FIELD_BYTES:
        name = segment.name or ""
        raise errors.invalid_request(f"The form field '{errors.shown(name, 100)}' is too long.", param=name or None)


def _keep(
    segment: multipart.MultipartSegment,
    content: bytes,
    fields: list[tuple[str, str]],
    files: list[tuple[str, str, str, bytes]],
) -> None:
    name = segment.name or ""
    if segment.filename is not None:
        files.append((name, segment.filename or "audio", segment.content_type or "application/octet-stream", content))
        return
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.invalid_request(
            f"The form field '{errors.shown(name, 100)}' is not UTF-8 text.", param=name or None
        ) from None
    if "\0" in text:
        raise errors.invalid_request(
            f"The form field '{errors.shown(name, 100)}' holds a NUL character.", param=name or None
        )
    fields.append((name, text))


def _checked(sent: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]]) -> Upload:
    if len(files) != 1 or files[0][0] != "file":
        raise errors.invalid_request("Send exactly one audio file, in the form field 'file'.", param="file")
    _, filename, file_type, content = files[0]
    if not content:
        raise errors.invalid_request("The audio file 'file' is empty.", param="file")
    values: dict[str, list[str]] = {}
    for name, value in sent:
        values.setdefault(name, []).append(value)
    for name, listed in values.items():
        if len(listed) > 1 and not name.endswith("[]"):
            raise errors.invalid_request(f"The form field '{errors.shown(name, 100)}' is sent twice.", param=name)
    model = values.get("model", [""])[0]
    if not model.strip():
        raise errors.invalid_request("Missing required parameter: 'model'.", param="model")
    response_format = values.get("response_format", ["json"])[0]
    if response_format not in RESPONSE_FORMATS:
        raise errors.invalid_request(
            f"Invalid value for 'response_format': one of {', '.join(RESPONSE_FORMATS)}.", param="response_format"
        )
    if values.get("stream", ["false"])[0].lower() not in ("false", "0"):
        raise errors.invalid_request("Invalid value for 'stream': transcriptions are answered whole.", param="stream")
    if "temperature" in values:
        try:
            temperature = float(values["temperature"][0])
        except ValueError:
            temperature = math.nan
        if not 0 <= temperature <= 1:
            raise errors.invalid_request("Invalid value for 'temperature': a number from 0 to 1.", param="temperature")
    for granularity in values.get("timestamp_granularities[]", []):
        if granularity not in ("word", "segment"):
            raise errors.invalid_request(
                "Invalid value for 'timestamp_granularities[]': word or segment.", param="timestamp_granularities[]"
            )
    return Upload(
        fields=sent,
        filename=filename,
        file_type=file_type,
        file=content,
        model=model,
        response_format=response_format,
    )


async def heard_duration_ms(audio: bytes) -> int:
    """`longest_duration_ms` in a worker thread: demuxing is CPU work that would stall the event loop."""
    return await asyncio.to_thread(longest_duration_ms, audio)


def longest_duration_ms(audio: bytes) -> int:
    """The longest the audio plays, in milliseconds: the sum of its audio packets' durations as FFmpeg demuxes
    them (no decoding), or the length its container states if that is longer; a file FFmpeg cannot read, its
    size at the lowest bitrate of any format taken. The packets are what a provider hears, whatever the header
    claims: a WAV's data chunk size is ignored, so samples after the stated end still count."""
    size_bound = math.ceil(len(audio) * 8 * UNITS_PER_SECOND / LOWEST_BITS_PER_SECOND)
    try:
        seconds, complete = _demuxed_seconds(audio)
    # FFmpeg reading the client's bytes: a malformed file fails with one of PyAV's errors (InvalidDataError…),
    # or has no audio stream (IndexError); each such file is bounded by its size instead.
    except (av.FFmpegError, IndexError, ValueError, OverflowError):
        return size_bound
    measured = math.ceil(seconds * UNITS_PER_SECOND) if math.isfinite(seconds) and seconds > 0 else 0
    return measured if complete and measured else max(measured, size_bound)


def _demuxed_seconds(audio: bytes) -> tuple[float, bool]:
    """The longest of the first audio stream's packets' total, the span their timestamps cover (a packet may not
    state its duration) and its stated length, in seconds, and whether the whole file was read within the bounds."""
    deadline = time.monotonic() + MAX_DEMUX_SECONDS
    options = {"format_whitelist": DEMUXERS, "ignore_length": "1"}
    with av.open(io.BytesIO(audio), "r", options=options) as container:
        stream = container.streams.audio[0]
        time_base = stream.time_base
        if time_base is None:
            raise ValueError("an audio stream without a time base")
        ticks = 0
        first: int | None = None
        end = 0
        complete = True
        for count, packet in enumerate(container.demux(stream)):
            if count >= MAX_PACKETS or time.monotonic() > deadline:
                complete = False
                break
            duration = max(0, packet.duration or 0)
            ticks += duration
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                end = max(end, packet.pts + duration)
        stated = [float(stream.duration * time_base)] if stream.duration else []
        if container.duration:
            stated.append(container.duration / av.time_base)
        span = end - first if first is not None else 0
        return max([float(max(ticks, span) * time_base), *stated]), complete


class _DurationUsage(msgspec.Struct):
    type: str = ""
    seconds: float | int | None = None


class _Reported(msgspec.Struct):
    duration: float | int | None = None
    usage: _DurationUsage | None = None


def billed_duration_ms(answer: bytes, content_type: str, reserved_ms: int) -> int:
    """What the call is billed, in milliseconds: the duration the provider reports (verbose_json's `duration`,
    or `usage.seconds` of a duration usage), never more than reserved. An answer that states none (text, srt,
    vtt, or a model that reports tokens) is billed the reservation: the duration measured by demuxing the file,
    what the provider heard."""
    if not content_type.startswith("application/json"):
        return reserved_ms
    try:
        reported = msgspec.json.decode(answer, type=_Reported)
    except msgspec.DecodeError:
        return reserved_ms
    seconds = reported.duration
    if seconds is None and reported.usage is not None and reported.usage.type == "duration":
        seconds = reported.usage.seconds
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return reserved_ms
    return min(reserved_ms, math.ceil(seconds * UNITS_PER_SECOND))
