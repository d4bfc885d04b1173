"""What every adapter provides, and the shapes that pass between the engine and the adapters.

The engine speaks one dialect, OpenAI's: requests and responses are OpenAI-format dicts, stream chunks
are OpenAI-format `chat.completion.chunk` JSON. Each adapter translates that to and from its provider.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

# Token counts a provider reports are stored in INTEGER columns; more than this is not a real count.
MAX_REPORTED_TOKENS = 2**31 - 1


def estimated_tokens(text_length: int) -> int:
    """Tokens in a piece of text when the provider does not say: about four characters a token."""
    return math.ceil(text_length / 4)


class Usage(msgspec.Struct, frozen=True):
    """Token counts of a call. `prompt_tokens` is every input token, including those read from the provider's
    prompt cache (`cached_tokens`) and those written to it (`cache_write_tokens`), each priced on its own."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def cache_counts(self) -> tuple[int, int]:
        """(cached, cache-write) tokens, bounded by the prompt: a provider can never make more tokens cheap
        than it sent."""
        cached = min(self.cached_tokens, self.prompt_tokens)
        return cached, min(self.cache_write_tokens, self.prompt_tokens - cached)

    def uncached_prompt_tokens(self) -> int:
        cached, written = self.cache_counts()
        return self.prompt_tokens - cached - written


def reported_count(value: Any) -> int | None:
    """A token count as a provider reported it, if it is one: a whole, non-negative number (a negative one
    would lower the bill), capped at what the usage log can hold. Anything else is no count (None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return min(int(value), MAX_REPORTED_TOKENS) if value >= 0 else None


class Target(msgspec.Struct, frozen=True):
    """The channel a call goes to, with the key picked for it and the model name the provider knows."""

    channel_id: str
    base_url: str
    api_key: str
    upstream_model: str
    api_version: str | None = None


class Timeouts(msgspec.Struct, frozen=True):
    connect: float
    read: float


class Completion(msgspec.Struct):
    """A whole (non-streamed) answer, already in OpenAI format."""

    body: dict[str, Any]
    usage: Usage | None
    # The provider's own answer, when the request was sent in the provider's own format (`native`).
    native: dict[str, Any] | None = None


class Chunk(msgspec.Struct):
    """One OpenAI-format stream chunk (`raw` JSON), with what the engine needs to bill it."""

    raw: bytes
    # How many completion tokens this chunk carries, as far as can be told without the upstream's count.
    tokens: int = 0
    usage: Usage | None = None
    # The final chunk that only reports usage (`choices: []`): shown only to clients that asked for it.
    usage_only: bool = False
    # The provider's own event, when the request was sent in the provider's own format (`native`).
    native: bytes | None = None


class UpstreamError(Exception):
    """The provider failed. `retryable`: another channel may succeed. `disables_channel`: bad key or billing."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        disables_channel: bool = False,
        timed_out: bool = False,
        retry_after: int | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.message = message
        # What the provider answered, for an adapter that can correct its request and try again.
        self.body = body
        self.status = status
        self.retryable = retryable
        self.disables_channel = disables_channel
        self.timed_out = timed_out
        self.retry_after = retry_after


def classify_http_error(status: int, body: bytes, retry_after: str | None = None) -> UpstreamError:
    """Turn a provider's error status into what the router should do about it."""
    text = body[:500].decode("utf-8", "replace")
    billing = b"insufficient_quota" in body or b"billing" in body or status == 402
    if status in (401, 403) or billing:
        return UpstreamError(
            f"the provider refused the channel's credentials or billing ({status}): {text}",
            status=status,
            disables_channel=True,
        )
    if status == 429:
        wait = int(retry_after) if retry_after and retry_after.isdigit() else None
        return UpstreamError(f"the provider is rate limiting this channel: {text}", status=429, retry_after=wait)
    if status in (400, 422):
        # The request itself is at fault: another channel would refuse it too.
        return UpstreamError(
            f"the provider rejected the request: {text}", status=status, retryable=False, body=body[:4096]
        )
    return UpstreamError(f"the provider failed ({status}): {text}", status=status)


def network_error(error: BaseException) -> UpstreamError:
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError("the provider did not answer in time", timed_out=True)
    return UpstreamError(f"could not reach the provider ({type(error).__name__})")


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent-events body, one per event, whatever the chunking."""
    buffer = b""
    async for piece in response.content.iter_any():
        buffer += piece
        while True:
            line_end = buffer.find(b"\n")
            if line_end < 0:
                break
            line = buffer[:line_end].rstrip(b"\r")
            buffer = buffer[line_end + 1 :]
            if line.startswith(b"data:"):
                yield line[5:].lstrip()
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip()


class Adapter(abc.ABC):
    """One provider wire format. Adding a provider means adding one module with one subclass.

    `body` is an OpenAI-format request whose output limit is already set, in the parameter the channel's
    provider type takes. `native`, when given, is the client's own request in this adapter's wire format:
    an adapter that speaks that format sends it instead of a translation, so that nothing is lost, and
    hands back the provider's own answer (`Completion.native`, `Chunk.native`) beside the translation.
    """

    supports_embeddings = True
    # A `/rerank` endpoint in the shape Cohere v2 and Jina share.
    supports_rerank = False
    # Images, speech, transcription and moderation (`/v1/images/generations`, `/v1/audio/*`, `/v1/moderations`).
    supports_media = False

    @abc.abstractmethod
    async def complete(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> Completion: ...

    @abc.abstractmethod
    def stream(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        """Chunks in order; raises UpstreamError if the provider refuses before the first one."""

    async def embed(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        raise UpstreamError("this provider has no embeddings API", retryable=False, status=400)

    async def rerank(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        raise UpstreamError("this provider has no rerank API", retryable=False, status=400)

    async def generate_images(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        raise UpstreamError("this provider has no images API", retryable=False, status=400)

    async def moderate(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        raise UpstreamError("this provider has no moderations API", retryable=False, status=400)

    async def speak(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> tuple[bytes, str]:
        """The provider's audio and its content type."""
        raise UpstreamError("this provider has no speech API", retryable=False, status=400)

    async def transcribe(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        fields: list[tuple[str, str]],
        file: tuple[str, str, bytes],
        timeouts: Timeouts,
    ) -> tuple[bytes, str]:
        """The provider's transcription of `file` (name, content type, bytes) and its content type."""
        raise UpstreamError("this provider has no transcription API", retryable=False, status=400)
