"""/v1/audio/transcriptions in OpenAI's shape: the multipart upload read within the body limit, the longest the
audio can last (what is reserved) and the duration the provider reports (what is billed)."""

from __future__ import annotations

import io
import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import multipart
from mutagen import File as read_audio

from app.gateway import errors

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# A file whose duration cannot be read lasts at most its size at this bitrate: 6 kbit/s is Opus's lowest, the
# smallest of the formats OpenAI takes (flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm), so no real file of
# that size plays longer.
LOWEST_BITS_PER_SECOND = 6000
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


def longest_duration_ms(audio: bytes) -> int:
    """The longest the audio can last, in milliseconds: its length as its container states it (mutagen reads
    mp3, m4a, ogg, flac, wav and more), else its size at the lowest bitrate of any format taken."""
    try:
        info = getattr(read_audio(io.BytesIO(audio)), "info", None)
        length = float(getattr(info, "length", 0) or 0)
    # A parser of the client's bytes: a malformed file may fail in any way inside it (struct.error, IndexError,
    # MutagenError…), and each such file is bounded by its size instead.
    except Exception:
        length = 0.0
    if math.isfinite(length) and length > 0:
        return max(1, math.ceil(length * UNITS_PER_SECOND))
    return math.ceil(len(audio) * 8 * UNITS_PER_SECOND / LOWEST_BITS_PER_SECOND)


class _DurationUsage(msgspec.Struct):
    type: str = ""
    seconds: float | int | None = None


class _Reported(msgspec.Struct):
    duration: float | int | None = None
    usage: _DurationUsage | None = None


def billed_duration_ms(answer: bytes, content_type: str, reserved_ms: int) -> int:
    """What the call is billed, in milliseconds: the duration the provider reports (verbose_json's `duration`,
    or `usage.seconds` of a duration usage), never more than reserved. An answer that states none (text, srt,
    vtt, or a model that reports tokens) is billed the duration read from the file, the reservation."""
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
