"""Google Gemini (`generateContent`) as a provider: OpenAI-format requests, answers, tool calls, streams translated."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from app.gateway.adapters.base import (
    MAX_REPORTED_TOKENS,
    Adapter,
    Chunk,
    Completion,
    Target,
    Timeouts,
    UpstreamError,
    Usage,
    estimated_tokens,
    network_error,
    reported_count,
    sse_data,
)
from app.gateway.adapters.openai import open_stream, post_json

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
# Everything else Gemini ends on (SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY, …) is a
# refusal by its filters; MALFORMED_FUNCTION_CALL and OTHER are not, but no OpenAI reason fits them better.
FILTERED = "content_filter"
# JSON-schema keywords Gemini's `Schema` refuses with a 400 ("Unknown name ..."): dropped from tool parameters
# and response schemas; what they say (no extra keys, the schema's dialect) is not enforced by Gemini anyway.
REFUSED_SCHEMA_KEYS = frozenset(
    {"additionalProperties", "$schema", "$id", "$comment", "strict", "unevaluatedProperties"}
)
# A tool call's id carries Gemini's `thoughtSignature` after this mark, so that the next turn can send it back:
# Gemini's thinking models refuse a function call of the current turn without its signature.
SIGNATURE_MARK = "~sig~"


class ImageUrlRefused(UpstreamError):
    def __init__(self) -> None:
        super().__init__(
            "Gemini channels take images as data: URLs (base64), not http(s) links; send the image inline.",
            status=400,
            retryable=False,
        )


def _schema(schema: Any) -> Any:
    """A JSON schema as Gemini takes it: the keywords it refuses dropped, at every depth."""
    if isinstance(schema, dict):
        return {key: _schema(value) for key, value in schema.items() if key not in REFUSED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [_schema(value) for value in schema]
    return schema


def _image_part(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        mime_type, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": mime_type or "application/octet-stream", "data": data}}
    # Fetching a client's link from inside the gateway would let any key holder make Lyss call internal addresses.
    raise ImageUrlRefused


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text") or "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            parts.append(_image_part(str(image.get("url", "")) if isinstance(image, dict) else str(image)))
    return parts


def _text(content: Any) -> str:
    return "".join(part.get("text", "") for part in _parts(content))


def _arguments(text: Any) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(text or "{}")
    except (msgspec.DecodeError, TypeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _tool_result(content: Any) -> dict[str, Any]:
    """A tool's answer as Gemini's `functionResponse.response`, which must be an object."""
    text = _text(content)
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError:
        decoded = None
    return decoded if isinstance(decoded, dict) else {"result": text}


def _function_call(call: dict[str, Any]) -> dict[str, Any]:
    given = call.get("function")
    function: dict[str, Any] = given if isinstance(given, dict) else {}
    part: dict[str, Any] = {
        "functionCall": {"name": function.get("name"), "args": _arguments(function.get("arguments"))}
    }
    call_id = str(call.get("id") or "")
    if SIGNATURE_MARK in call_id:
        part["thoughtSignature"] = call_id.split(SIGNATURE_MARK, 1)[1]
    return part


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}}
    return None


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"), ("n", "candidateCount")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    for ours, theirs in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(ours):
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            config["responseMimeType"] = "application/json"
        elif response_format.get("type") == "json_schema":
            config["responseMimeType"] = "application/json"
            schema = (response_format.get("json_schema") or {}).get("schema")
            if isinstance(schema, dict):
                config["responseSchema"] = _schema(schema)
    return config


def to_gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini `generateContent` request (the model goes in the URL)."""
    system_parts: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    # Gemini matches a function's answer to its call by name; OpenAI by the call's id.
    names_of_calls: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        # Gemini wants the turns to alternate: consecutive turns of one role (several tool results) merge.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.extend({"text": part["text"]} for part in _parts(message.get("content")) if "text" in part)
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict):
                    part = _function_call(call)
                    names_of_calls[str(call.get("id"))] = part["functionCall"]["name"]
                    parts.append(part)
            add("model", parts)
        elif role == "tool":
            name = names_of_calls.get(str(message.get("tool_call_id")), message.get("name") or "tool")
            add("user", [{"functionResponse": {"name": name, "response": _tool_result(message.get("content"))}}])
        else:
            add("user", _parts(message.get("content")))

    request: dict[str, Any] = {"contents": contents}
    if system_parts:
        request["systemInstruction"] = {"parts": system_parts}
    if config := _generation_config(body):
        request["generationConfig"] = config
    declarations = [
        {
            "name": tool["function"].get("name"),
            "description": tool["function"].get("description", ""),
            "parameters": _schema(tool["function"].get("parameters") or {"type": "object", "properties": {}}),
        }
        for tool in body.get("tools") or []
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
    ]
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        if (tool_config := _tool_config(body.get("tool_choice"))) is not None:
            request["toolConfig"] = tool_config
    return request


def gemini_usage(metadata: Any) -> Usage | None:
    """Gemini's `usageMetadata`: the prompt count includes the cached tokens (priced as cached) and tool-use
    prompt tokens are input too; thinking is billed as output. None (Lyss estimates) when there is none."""
    if not isinstance(metadata, dict):
        return None

    def count(name: str) -> int:
        return reported_count(metadata.get(name) or 0) or 0

    prompt = min(count("promptTokenCount") + count("toolUsePromptTokenCount"), MAX_REPORTED_TOKENS)
    completion = min(count("candidatesTokenCount") + count("thoughtsTokenCount"), MAX_REPORTED_TOKENS)
    return Usage(prompt, completion, cached_tokens=count("cachedContentTokenCount"))


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_counts()[0]},
    }


def _finish_reason(reason: Any, called: bool) -> str | None:
    if not reason:
        return None
    if called and reason == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(str(reason), FILTERED)


def _tool_call(part: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    function = part["functionCall"] if isinstance(part["functionCall"], dict) else {}
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    if isinstance(part.get("thoughtSignature"), str):
        call_id += SIGNATURE_MARK + part["thoughtSignature"]
    call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {
            "name": function.get("name"),
            "arguments": msgspec.json.encode(function.get("args") or {}).decode(),
        },
    }
    return call if index is None else {"index": index, **call}


def _candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    # A thought summary (`thought: true`) is the model's reasoning, not its answer.
    return [part for part in parts or [] if isinstance(part, dict) and not part.get("thought")]


def _candidates(answer: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = answer.get("candidates")
    return (
        [candidate for candidate in candidates if isinstance(candidate, dict)] if isinstance(candidates, list) else []
    )


def to_openai_response(answer: dict[str, Any], model: str) -> Completion:
    """A Gemini `generateContent` answer as an OpenAI chat completion."""
    choices = []
    for position, candidate in enumerate(_candidates(answer)):
        parts = _candidate_parts(candidate)
        text = "".join(str(part["text"]) for part in parts if "text" in part)
        calls = [_tool_call(part) for part in parts if "functionCall" in part]
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        index = candidate.get("index")
        choices.append(
            {
                "index": index if isinstance(index, int) else position,
                "message": message,
                "finish_reason": _finish_reason(candidate.get("finishReason"), bool(calls)) or "stop",
            }
        )
    if not choices:
        # The prompt itself was blocked (`promptFeedback.blockReason`): no candidate at all.
        choices = [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": FILTERED}]
    usage = gemini_usage(answer.get("usageMetadata"))
    body: dict[str, Any] = {
        "id": f"chatcmpl-{answer.get('responseId') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("modelVersion") or model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return Completion(body=body, usage=usage)


class _StreamTranslator:
    """Gemini stream answers in (each a partial `GenerateContentResponse`), OpenAI chunks out."""

    def __init__(self, model: str) -> None:
        self.base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.usage: Usage | None = None
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}
        self.finished: set[int] = set()

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None, tokens: int = 0) -> Chunk:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        return Chunk(raw=msgspec.json.encode({**self.base, "choices": [choice]}), tokens=tokens)

    def translate(self, answer: dict[str, Any]) -> list[Chunk]:
        if isinstance(answer.get("modelVersion"), str):
            self.base["model"] = answer["modelVersion"]
        # Each answer repeats the counts so far; the last one holds them all.
        self.usage = gemini_usage(answer.get("usageMetadata")) or self.usage
        chunks = []
        for position, candidate in enumerate(_candidates(answer)):
            given = candidate.get("index")
            index = given if isinstance(given, int) else position
            delta: dict[str, Any] = {}
            if index not in self.started:
                self.started.add(index)
                delta["role"] = "assistant"
            parts = _candidate_parts(candidate)
            text = "".join(str(part["text"]) for part in parts if "text" in part)
            calls = []
            for part in parts:
                if "functionCall" in part:
                    calls.append(_tool_call(part, self.calls.get(index, 0)))
                    self.calls[index] = self.calls.get(index, 0) + 1
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = calls
            length = len(text) + sum(len(call["function"]["arguments"]) for call in calls)
            finish = _finish_reason(candidate.get("finishReason"), index in self.calls)
            if finish is not None:
                self.finished.add(index)
            if delta or finish:
                chunks.append(self._chunk(index, delta, finish, max(1, estimated_tokens(length)) if length else 0))
        if (
            not chunks
            and isinstance(answer.get("promptFeedback"), dict)
            and answer["promptFeedback"].get("blockReason")
        ):
            self.finished.add(0)
            chunks.append(self._chunk(0, {"role": "assistant"}, FILTERED))
        return chunks

    def final(self) -> list[Chunk]:
        """The usage chunk, once Gemini said every answer is finished (none if it sent no counts)."""
        if not self.finished:
            raise UpstreamError("the provider's stream ended before its answer did", status=502)
        if self.usage is None:
            return []
        raw = msgspec.json.encode({**self.base, "choices": [], "usage": openai_usage(self.usage)})
        return [Chunk(raw=raw, usage=self.usage, usage_only=True)]


def reclassified(error: UpstreamError) -> UpstreamError:
    """Gemini answers a bad API key (`API_KEY_INVALID`) and a project it will not serve (`FAILED_PRECONDITION`:
    no billing, an unsupported region) with a 400, which would otherwise read as a bad request: the channel is
    at fault, so it is disabled and the call moves on."""
    if error.status == 400 and (
        b"API_KEY_INVALID" in error.body or b"API key not valid" in error.body or b"FAILED_PRECONDITION" in error.body
    ):
        return UpstreamError(
            f"the provider refused the channel's key or project: {error.body[:500].decode('utf-8', 'replace')}",
            status=400,
            disables_channel=True,
        )
    return error


def to_gemini_embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as a Gemini `batchEmbedContents` request: one request per input text."""
    inputs = body.get("input")
    texts = inputs if isinstance(inputs, list) else [inputs]
    if not all(isinstance(text, str) for text in texts):
        raise UpstreamError(
            "Gemini channels embed text, not token ids; send the input as strings.", status=400, retryable=False
        )
    extra = {"outputDimensionality": body["dimensions"]} if body.get("dimensions") else {}
    return {
        "requests": [{"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra} for text in texts]
    }


def to_openai_embeddings(answer: dict[str, Any], model: str, encoding: Any) -> Completion:
    """Gemini's embeddings as OpenAI's list, base64 (little-endian float32, as OpenAI sends it) when asked."""
    embeddings = answer.get("embeddings")
    if not isinstance(embeddings, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("values"), list) for entry in embeddings
    ):
        raise UpstreamError("the provider's answer has no embeddings", status=502)
    data = []
    for index, entry in enumerate(embeddings):
        values = entry["values"]
        vector: Any = values
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    # Gemini's Developer API does not count an embedding call's tokens: without its figure, Lyss estimates.
    metadata = answer.get("usageMetadata")
    usage = gemini_usage(metadata) if isinstance(metadata, dict) and "promptTokenCount" in metadata else None
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
    return Completion(body=body, usage=usage)


class GeminiAdapter(Adapter):
    def _headers(self, target: Target) -> dict[str, str]:
        # In a header, not the `key=` query parameter: URLs end up in logs.
        return {"x-goog-api-key": target.api_key}

    def _url(self, target: Target, method: str) -> str:
        return f"{target.base_url.rstrip('/')}/models/{quote(target.upstream_model, safe='')}:{method}"

    async def complete(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> Completion:
        request = to_gemini_request(body)
        try:
            answer = await post_json(
                http, self._url(target, "generateContent"), self._headers(target), request, timeouts
            )
        except UpstreamError as error:
            raise reclassified(error) from None
        if not isinstance(answer.get("candidates"), list) and not isinstance(answer.get("promptFeedback"), dict):
            raise UpstreamError("the provider's answer has no candidates", status=502)
        return to_openai_response(answer, target.upstream_model)

    async def stream(
        self,
        http: aiohttp.ClientSession,
        target: Target,
        body: dict[str, Any],
        timeouts: Timeouts,
        native: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        request = to_gemini_request(body)
        url = self._url(target, "streamGenerateContent") + "?alt=sse"
        try:
            response = await open_stream(http, url, self._headers(target), request, timeouts)
        except UpstreamError as error:
            raise reclassified(error) from None
        translator = _StreamTranslator(target.upstream_model)
        try:
            async for data in sse_data(response):
                try:
                    answer = msgspec.json.decode(data)
                except msgspec.DecodeError:
                    raise UpstreamError("the provider sent a stream event that is not JSON", status=502) from None
                if not isinstance(answer, dict):
                    raise UpstreamError("the provider sent a stream event that is not an object", status=502)
                if isinstance(answer.get("error"), dict):
                    raise UpstreamError(f"the provider failed mid-stream: {answer['error']}", status=502)
                for chunk in translator.translate(answer):
                    yield chunk
            for chunk in translator.final():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            raise network_error(error) from None
        finally:
            response.release()

    async def embed(
        self, http: aiohttp.ClientSession, target: Target, body: dict[str, Any], timeouts: Timeouts
    ) -> Completion:
        request = to_gemini_embeddings(body, target.upstream_model)
        try:
            answer = await post_json(
                http, self._url(target, "batchEmbedContents"), self._headers(target), request, timeouts
            )
        except UpstreamError as error:
            raise reclassified(error) from None
        try:
            return to_openai_embeddings(answer, target.upstream_model, body.get("encoding_format"))
        except struct.error:
            raise UpstreamError("the provider's embeddings are not numbers", status=502) from None
