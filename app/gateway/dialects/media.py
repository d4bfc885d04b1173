"""/v1/images/generations, /v1/moderations and /v1/audio/speech in OpenAI's shape: the requests Lyss reads and
the units each is billed by (images returned, one request, characters spoken)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from app.gateway import errors
from app.gateway.adapters.base import UpstreamError
from app.gateway.dialects.openai import NonEmpty, invalid_parameter

# OpenAI's bounds: up to 10 images a call; a prompt of up to 32,000 characters (gpt-image-1's, the largest);
# speech input of up to 4,096 characters.
MAX_IMAGES = 10
MAX_IMAGE_PROMPT = 32_000
MAX_SPEECH_INPUT = 4096
# Moderation input: OpenAI takes up to 32,768 tokens; a list of more than this many items is refused here.
MAX_MODERATION_INPUTS = 2048
T = TypeVar("T")


class ImageRequest(msgspec.Struct):
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IMAGE_PROMPT)]
    model: NonEmpty
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)] = 1
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    style: str | None = None
    user: str | None = None
    stream: bool = False


class _ModerationPart(msgspec.Struct):
    type: NonEmpty


class ModerationRequest(msgspec.Struct):
    input: str | Annotated[list[str | _ModerationPart], msgspec.Meta(min_length=1)]
    model: NonEmpty


class SpeechRequest(msgspec.Struct):
    model: NonEmpty
    input: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SPEECH_INPUT)]
    voice: NonEmpty
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] | None = None
    instructions: Annotated[str, msgspec.Meta(max_length=MAX_SPEECH_INPUT)] | None = None
    stream_format: Literal["audio"] | None = None


def _typed(body: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(body, kind, strict=True)
    except msgspec.ValidationError as error:
        raise invalid_parameter(error) from None


def image_request(body: dict[str, Any]) -> ImageRequest:
    request = _typed(body, ImageRequest)
    if request.stream:
        raise errors.invalid_request("Invalid value for 'stream': images are answered whole.", param="stream")
    return request


def moderation_request(body: dict[str, Any]) -> ModerationRequest:
    request = _typed(body, ModerationRequest)
    if isinstance(request.input, list) and len(request.input) > MAX_MODERATION_INPUTS:
        raise errors.invalid_request(
            f"Invalid value for 'input': at most {MAX_MODERATION_INPUTS} items a call.", param="input"
        )
    return request


def speech_request(body: dict[str, Any]) -> SpeechRequest:
    request = _typed(body, SpeechRequest)
    if request.stream_format is not None:
        raise errors.invalid_request(
            "Invalid value for 'stream_format': speech is answered whole, as audio.", param="stream_format"
        )
    return request


def images_returned(answer: dict[str, Any], asked: int) -> int:
    """How many images the provider returned (what the call is billed for, never more than asked), or
    UpstreamError (a 502 to try the next channel with) when the answer holds none."""
    data = answer.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(item, dict) for item in data):
        raise UpstreamError("the provider's image answer has no images", status=502)
    return min(len(data), asked)


def moderation_checked(answer: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(answer.get("results"), list) or not answer["results"]:
        raise UpstreamError("the provider's moderation answer has no results", status=502)
    return answer
