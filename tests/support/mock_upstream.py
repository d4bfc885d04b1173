"""A mock LLM provider on loopback: OpenAI, Anthropic and Gemini protocols, streaming included, scriptable to misbehave.

Each path prefix is an independent upstream account (`http://127.0.0.1:<port>/<name>/v1`), so tests give
every channel its own prefix and script it: fail with a status, hang, send garbage, cut a stream after N
chunks, pace chunks. It runs in its own thread and event loop, so it serves whatever loop the tests use,
and it is a real HTTP server (aiohttp), so the gateway's client, pooling and timeouts are exercised.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.support import mock_media


def word_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic embedding: each word (lower-cased, punctuation stripped) adds a signed unit in a
    hashed position; normalised. Texts sharing words are close, texts sharing none are orthogonal-ish."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        position = int.from_bytes(digest[:4], "big") % dimensions
        vector[position] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


def rerank_score(query: str, document: str) -> float:
    """The mock's relevance: the share of the query's distinct words (lower-cased, punctuation stripped)
    that the document contains; 0.0 for a query of no words."""
    wanted = set(re.findall(r"[a-z0-9]+", query.lower()))
    present = set(re.findall(r"[a-z0-9]+", document.lower()))
    return len(wanted & present) / len(wanted) if wanted else 0.0


@dataclass
class Behavior:
    status: int = 200
    hang_seconds: float = 0.0
    words: int = 5
    cut_after_chunks: int | None = None
    chunk_delay_seconds: float = 0.0
    garbage: bool = False
    report_usage: bool = True
    error_code: str = "server_error"
    # Scripted answers, one per chat call in order (then the usual `w0 w1 ...`).
    replies: list[str] = field(default_factory=list)
    # With a size, embeddings are real bag-of-words vectors (`word_vector`); without, a constant.
    dimensions: int | None = None
    # An account that only serves embedding models: chat calls answer 404, as OpenAI does for them.
    embeddings_only: bool = False
    # A model that refuses this request parameter as OpenAI's reasoning models refuse `max_tokens` (400).
    refused_parameter: str | None = None
    # The `usage` object to report instead of the true counts (an overshooting or confused provider).
    reported_usage: dict[str, Any] | None = None
    # A body this mock cannot read gets a 400, as from a real provider, instead of crashing into a 500.
    refuse_unreadable: bool = False
    # The rerank answer to send instead of the true ranking (a confused provider).
    rerank_answer: dict[str, Any] | None = None
    # Rerank answers in Cohere's shape (`meta.billed_units.search_units`) instead of Jina's (`usage`).
    cohere: bool = False
    # Chat calls given tools answer with a call of the first one (`{"city": "Paris"}`), as the Anthropic mock does.
    call_tools: bool = False
    # What `GET /models` lists (OpenAI's and Anthropic's shape alike: `{"data": [{"id": ...}]}`).
    models: list[str] = field(default_factory=lambda: ["mock-large", "mock-small"])
    # How many images to return instead of the `n` asked.
    images_returned: int | None = None


@dataclass
class MockUpstream:
    behaviors: dict[str, Behavior] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    # Calls of each account's `/responses` (the Responses API), beside `calls` which counts every call.
    responses_calls: Counter[str] = field(default_factory=Counter)
    # Requests each account is answering right now, and the most it has answered at once.
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def gemini_base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1beta"

    def behave(self, name: str, **settings: Any) -> None:
        self.behaviors[name] = Behavior(**settings)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(middlewares=[self._count_in_flight, self._refuse_unreadable])
        app.router.add_post("/{name}/v1/chat/completions", self._chat)
        app.router.add_post("/{name}/v1/embeddings", self._embeddings)
        app.router.add_post("/{name}/v1/rerank", self._rerank)
        app.router.add_post("/{name}/v1/messages", self._messages)
        app.router.add_post("/{name}/v1/responses", self._responses)
        app.router.add_post("/{name}/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/{name}/v1/models", self._models)
        # Gemini: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
        app.router.add_post("/{name}/v1beta/models/{call}", self._generate_content)
        app.router.add_get("/{name}/v1beta/models", self._gemini_models)
        app.router.add_post("/{name}/v1/images/generations", functools.partial(mock_media.images, self))
        app.router.add_post("/{name}/v1/moderations", functools.partial(mock_media.moderations, self))
        app.router.add_post("/{name}/v1/audio/speech", functools.partial(mock_media.speech, self))
        app.router.add_post("/{name}/v1/audio/transcriptions", functools.partial(mock_media.transcriptions, self))
        # Azure OpenAI: the deployment in the path, the version in the query.
        app.router.add_post("/{name}/openai/deployments/{deployment}/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    # --- shared ---------------------------------------------------------------------------------

    @web.middleware
    async def _count_in_flight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # A stream is written inside its handler, so this spans the whole answer.
        name = request.match_info.get("name", "")
        self.in_flight[name] += 1
        self.most_in_flight[name] = max(self.most_in_flight[name], self.in_flight[name])
        try:
            return await handler(request)
        finally:
            self.in_flight[name] -= 1

    @web.middleware
    async def _refuse_unreadable(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            if not self.behaviors.get(request.match_info.get("name", ""), Behavior()).refuse_unreadable:
                raise
            message = f"The mock provider cannot read this request ({type(error).__name__})."
            error_body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
            return web.json_response(error_body, status=400)

    async def _prologue(self, request: web.Request) -> tuple[str, Behavior, dict[str, Any], web.Response | None]:
        name = request.match_info["name"]
        behavior = self.behaviors.get(name, Behavior())
        body = await request.json()
        self.calls[name] += 1
        self.bodies.append((name, body))
        self.headers_seen.append({**request.headers, "path_qs": request.path_qs})
        if behavior.hang_seconds:
            await asyncio.sleep(behavior.hang_seconds)
        if behavior.status != 200:
            error = {
                "error": {
                    "message": f"scripted failure of {name}",
                    "type": behavior.error_code,
                    "code": behavior.error_code,
                }
            }
            return name, behavior, body, web.json_response(error, status=behavior.status)
        if behavior.garbage:
            return name, behavior, body, web.Response(body=b"<html>502 proxy error</html>", content_type="text/html")
        return name, behavior, body, None

    @staticmethod
    def _reply_words(name: str, behavior: Behavior, body: dict[str, Any]) -> list[str]:
        if behavior.replies:
            # Streamed word by word with the spaces kept, so that the text arrives exactly as scripted.
            return behavior.replies.pop(0).split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or behavior.words
        return [f"w{index}" for index in range(min(behavior.words, int(limit)))] or [name]

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        return sum(len(str(message.get("content", "")).split()) for message in body.get("messages", [])) or 1

    async def _write_event(self, response: web.StreamResponse, payload: bytes, event: str | None = None) -> None:
        prefix = f"event: {event}\n".encode() if event else b""
        await response.write(prefix + b"data: " + payload + b"\n\n")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """The model list: scripted failures as for calls; Anthropic's extra fields when asked its way."""
        name = request.match_info["name"]
        behavior = self.behaviors.get(name, Behavior())
        self.calls[name] += 1
        self.headers_seen.append({**request.headers, "path_qs": request.path_qs})
        if behavior.hang_seconds:
            await asyncio.sleep(behavior.hang_seconds)
        if behavior.status != 200:
            error = {"error": {"message": f"scripted failure of {name}", "type": behavior.error_code}}
            return web.json_response(error, status=behavior.status)
        if behavior.garbage:
            return web.Response(body=b"<html>502 proxy error</html>", content_type="text/html")
        data: list[dict[str, Any]] = [{"id": model, "object": "model", "owned_by": name} for model in behavior.models]
        if "x-api-key" in request.headers:
            data = [{"id": model, "type": "model", "display_name": model} for model in behavior.models]
            return web.json_response({"data": data, "has_more": False, "first_id": None, "last_id": None})
        return web.json_response({"object": "list", "data": data})

    # --- OpenAI ---------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        name, behavior, body, failure = await self._prologue(request)
        if failure is not None:
            return failure
        if behavior.embeddings_only:
            error = {"message": f"{body['model']} is not a chat model", "type": "invalid_request_error"}
            return web.json_response({"error": {**error, "code": "model_not_found"}}, status=404)
        if behavior.refused_parameter is not None and behavior.refused_parameter in body:
            refused = behavior.refused_parameter
            message = f"Unsupported parameter: '{refused}' is not supported with this model."
            error = {"message": message, "type": "invalid_request_error", "param": refused}
            return web.json_response({"error": {**error, "code": "unsupported_parameter"}}, status=400)
        scripted = behavior.replies.pop(0) if behavior.replies else None
        words = scripted.split() if scripted is not None else self._reply_words(name, behavior, body)
        # Streamed piece by piece with their spaces, so that the text arrives exactly as it would whole.
        pieces = re.findall(r"\S+\s*", scripted) if scripted is not None else [word + " " for word in words]
        content = scripted if scripted is not None else " ".join(words)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish_reason = "length" if scripted is None and limit is not None and int(limit) < behavior.words else "stop"
        tool = (body.get("tools") or [None])[0] if behavior.call_tools else None
        call: dict[str, Any] | None = None
        if tool is not None:
            finish_reason = "tool_calls"
            function = {"name": tool["function"]["name"], "arguments": '{"city": "Paris"}'}
            call = {"index": 0, "id": "call_1", "type": "function", "function": function}
        usage = {
            "prompt_tokens": self._prompt_tokens(body),
            "completion_tokens": len(words),
            "total_tokens": self._prompt_tokens(body) + len(words),
        }
        if behavior.reported_usage is not None:
            usage = behavior.reported_usage
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
            answer["choices"][0]["finish_reason"] = finish_reason
            if call is not None:
                answer["choices"][0]["message"]["tool_calls"] = [{k: v for k, v in call.items() if k != "index"}]
            if behavior.report_usage:
                answer["usage"] = usage
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, piece in enumerate(pieces):
            if behavior.cut_after_chunks is not None and index >= behavior.cut_after_chunks:
                request.transport.close()  # type: ignore[union-attr]  # the provider vanishes mid-stream
                return response
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            await self._write_event(response, json.dumps(chunk).encode())
            if behavior.chunk_delay_seconds:
                await asyncio.sleep(behavior.chunk_delay_seconds)
        if call is not None:
            # The arguments in two pieces, as a provider streams them.
            opening = {**call, "function": {**call["function"], "arguments": '{"city": '}}
            for delta in (
                {"tool_calls": [opening]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
            ):
                chunk = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
                await self._write_event(response, json.dumps(chunk).encode())
        finish = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
        }
        await self._write_event(response, json.dumps(finish).encode())
        if behavior.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            await self._write_event(
                response,
                json.dumps({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}).encode(),
            )
        await self._write_event(response, b"[DONE]")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        _, _, body, failure = await self._prologue(request)
        if failure is not None:
            return failure
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        behavior = self.behaviors.get(request.match_info["name"], Behavior())
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": word_vector(str(text), behavior.dimensions) if behavior.dimensions else [0.1, 0.2, 0.3],
            }
            for index, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _rerank(self, request: web.Request) -> web.StreamResponse:
        """Jina's answer (documents back, `usage.total_tokens`: words of the query and each document), or
        Cohere's (`meta.billed_units.search_units`: one per 100 documents); scores by `rerank_score`."""
        _, behavior, body, failure = await self._prologue(request)
        if failure is not None:
            return failure
        if behavior.rerank_answer is not None:
            return web.json_response(behavior.rerank_answer)
        documents = [str(document) for document in body["documents"]]
        scored = sorted(
            ((index, rerank_score(body["query"], text)) for index, text in enumerate(documents)),
            key=lambda pair: (-pair[1], pair[0]),
        )[: body.get("top_n") or len(documents)]
        if behavior.cohere:
            results = [{"index": index, "relevance_score": score} for index, score in scored]
            search_units = -(-len(documents) // 100)
            return web.json_response(
                {"id": str(uuid.uuid4()), "results": results, "meta": {"billed_units": {"search_units": search_units}}}
            )
        results_with_documents: list[dict[str, Any]] = [
            {"index": index, "relevance_score": score, "document": {"text": documents[index]}}
            for index, score in scored
        ]
        tokens = sum(len(body["query"].split()) + len(text.split()) for text in documents)
        return web.json_response(
            {"model": body["model"], "results": results_with_documents, "usage": {"total_tokens": tokens}}
        )

    # --- OpenAI Responses -----------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API: `w0 w1 ...` (or a call of the first function tool given), usage in its shape
        (`reported_usage` in that shape instead, cached tokens and all), whole or as its event stream."""
        name, behavior, body, failure = await self._prologue(request)
        self.responses_calls[name] += 1
        if failure is not None:
            return failure
        limit = body.get("max_output_tokens") or behavior.words
        words = [f"w{index}" for index in range(min(behavior.words, int(limit)))]
        text = " ".join(words)
        prompt = len(str(body.get("input", "")).split()) + len(str(body.get("instructions") or "").split())
        usage = behavior.reported_usage or {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + len(words),
        }
        tool = next((tool for tool in body.get("tools") or [] if tool.get("type") == "function"), None)
        message = {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        output: list[dict[str, Any]] = [message]
        if tool is not None:
            arguments = '{"city": "Paris"}'
            call = {"id": "fc_mock", "type": "function_call", "call_id": "call_mock", "name": tool["name"]}
            output.append({**call, "arguments": arguments, "status": "completed"})
        status = "incomplete" if int(limit) < behavior.words else "completed"
        response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex[:12]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "store": body.get("store", True),
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(response)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        sequence = 0

        async def event(kind: str, payload: dict[str, Any]) -> None:
            nonlocal sequence
            data = {"type": kind, "sequence_number": sequence, **payload}
            sequence += 1
            await self._write_event(stream, json.dumps(data).encode(), event=kind)

        opening = {**response, "status": "in_progress", "output": [], "usage": None}
        await event("response.created", {"response": opening})
        await event("response.in_progress", {"response": opening})
        where = {"item_id": "msg_mock", "output_index": 0}
        await event("response.output_item.added", {"output_index": 0, "item": {**message, "content": []}})
        part = {"type": "output_text", "text": "", "annotations": []}
        await event("response.content_part.added", {**where, "content_index": 0, "part": part})
        for index, word in enumerate(words):
            if behavior.cut_after_chunks is not None and index >= behavior.cut_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return stream
            delta = word if index == 0 else " " + word
            await event("response.output_text.delta", {**where, "content_index": 0, "delta": delta, "logprobs": []})
        await event("response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []})
        await event("response.content_part.done", {**where, "content_index": 0, "part": {**part, "text": text}})
        await event("response.output_item.done", {"output_index": 0, "item": message})
        if tool is not None:
            call_item = output[1]
            added = {**call_item, "arguments": "", "status": "in_progress"}
            await event("response.output_item.added", {"output_index": 1, "item": added})
            calling = {"item_id": "fc_mock", "output_index": 1}
            await event("response.function_call_arguments.delta", {**calling, "delta": call_item["arguments"]})
            await event("response.function_call_arguments.done", {**calling, "arguments": call_item["arguments"]})
            await event("response.output_item.done", {"output_index": 1, "item": call_item})
        await event(f"response.{status}", {"response": response})
        await stream.write_eof()
        return stream

    # --- Anthropic ------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        name, behavior, body, failure = await self._prologue(request)
        if failure is not None:
            return failure
        words = self._reply_words(name, behavior, body)
        prompt = sum(len(str(message.get("content", "")).split()) for message in body.get("messages", [])) or 1
        tool = (body.get("tools") or [None])[0]
        message_id = f"msg_{uuid.uuid4().hex[:12]}"
        usage = behavior.reported_usage or {"input_tokens": prompt, "output_tokens": len(words)}
        # Streamed, the input counts (cache reads and writes among them) come in `message_start`, the output's in
        # `message_delta`, as Anthropic sends them.
        input_usage = {name: value for name, value in usage.items() if name != "output_tokens"}
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": " ".join(words)}]
            stop = "end_turn"
            if tool is not None:
                content.append({"type": "tool_use", "id": "toolu_1", "name": tool["name"], "input": {"city": "Paris"}})
                stop = "tool_use"
            return web.json_response(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(kind: str, payload: dict[str, Any]) -> None:
            await self._write_event(response, json.dumps({"type": kind, **payload}).encode(), event=kind)

        await event(
            "message_start",
            {
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "usage": {**input_usage, "output_tokens": 1},
                }
            },
        )
        await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for index, word in enumerate(words):
            if behavior.cut_after_chunks is not None and index >= behavior.cut_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return response
            await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word + " "}})
        await event("content_block_stop", {"index": 0})
        stop = "end_turn"
        if tool is not None:
            await event(
                "content_block_start",
                {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool["name"], "input": {}}},
            )
            await event(
                "content_block_delta",
                {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}},
            )
            await event("content_block_stop", {"index": 1})
            stop = "tool_use"
        output = {"output_tokens": usage.get("output_tokens", len(words))}
        await event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": output})
        await event("message_stop", {})
        await response.write_eof()
        return response

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        _, _, body, failure = await self._prologue(request)
        if failure is not None:
            return failure
        system = body.get("system") or ""
        words = len(str(system).split()) + sum(
            len(str(message.get("content", "")).split()) for message in body["messages"]
        )
        return web.json_response({"input_tokens": words})

    # --- Gemini ---------------------------------------------------------------------------------

    async def _generate_content(self, request: web.Request) -> web.StreamResponse:
        """Gemini's `generateContent` (or streamed, `streamGenerateContent?alt=sse`): the key in
        `x-goog-api-key` (one starting with `invalid` is refused as Gemini does, a 400 `API_KEY_INVALID`),
        a `functionCall` of the first declared function when tools are given and no function answered yet,
        else `w0 w1 ...`; `reported_usage` is the `usageMetadata` to send."""
        name, behavior, body, failure = await self._prologue(request)
        model, _, method = request.match_info["call"].partition(":")
        key = request.headers.get("x-goog-api-key", "")
        if failure is not None and behavior.status != 200:
            return self._gemini_error(behavior.status, f"scripted failure of {name}")
        if failure is not None:
            return failure
        if method not in ("generateContent", "streamGenerateContent", "batchEmbedContents") or "key" in request.query:
            return self._gemini_error(404, f"unknown method {method} or a key in the URL")
        if not key:
            return self._gemini_error(403, "Method doesn't allow unregistered callers.")
        if key.startswith("invalid"):
            return self._gemini_error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
        if method == "batchEmbedContents":
            requests = body["requests"]
            if any(entry["model"] != f"models/{model}" for entry in requests):
                return self._gemini_error(400, "every request must name the model of the URL")
            vectors = [
                word_vector(entry["content"]["parts"][0]["text"], behavior.dimensions or 8) for entry in requests
            ]
            return web.json_response({"embeddings": [{"values": vector} for vector in vectors]})
        contents = body["contents"]
        texts = [str(part.get("text", "")) for content in contents for part in content["parts"]]
        texts += [str(part.get("text", "")) for part in (body.get("systemInstruction") or {}).get("parts", [])]
        prompt = sum(len(text.split()) for text in texts) or 1
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens") or behavior.words
        words = [f"w{index}" for index in range(min(behavior.words, int(limit)))] or [name]
        answered = any("functionResponse" in part for part in contents[-1]["parts"])
        declared = [
            declaration for tool in body.get("tools") or [] for declaration in tool.get("functionDeclarations", [])
        ]
        call = None
        if declared and not answered:
            call = {
                "functionCall": {"name": declared[0]["name"], "args": {"city": "Paris"}},
                "thoughtSignature": "c2ln",
            }
        usage = behavior.reported_usage or {
            "promptTokenCount": prompt,
            "candidatesTokenCount": len(words),
            "totalTokenCount": prompt + len(words),
        }
        version = f"{model}-001"
        if method == "generateContent":
            parts: list[dict[str, Any]] = [{"text": " ".join(words)}] + ([call] if call else [])
            count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
            candidates = [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": index}
                for index in range(count)
            ]
            return web.json_response(
                {"candidates": candidates, "usageMetadata": usage, "modelVersion": version, "responseId": "r1"}
            )
        if request.query.get("alt") != "sse":
            return self._gemini_error(400, "this mock streams only as server-sent events (alt=sse)")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces: list[dict[str, Any]] = [{"text": word + " "} for word in words] + ([call] if call else [])
        for index, piece in enumerate(pieces):
            if behavior.cut_after_chunks is not None and index >= behavior.cut_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return response
            last = index == len(pieces) - 1
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            # The counts so far in every answer, the prompt's from the first: Gemini's are cumulative.
            so_far = usage if last else {"promptTokenCount": usage.get("promptTokenCount", prompt)}
            answer = {"candidates": [candidate], "usageMetadata": so_far, "modelVersion": version}
            await self._write_event(response, json.dumps(answer).encode())
            if behavior.chunk_delay_seconds:
                await asyncio.sleep(behavior.chunk_delay_seconds)
        await response.write_eof()
        return response

    async def _gemini_models(self, request: web.Request) -> web.StreamResponse:
        """Gemini's model list: `models/`-prefixed names, and an embedding model that cannot chat."""
        name = request.match_info["name"]
        behavior = self.behaviors.get(name, Behavior())
        self.calls[name] += 1
        self.headers_seen.append({**request.headers, "path_qs": request.path_qs})
        if behavior.status != 200:
            return self._gemini_error(behavior.status, f"scripted failure of {name}")
        if not request.headers.get("x-goog-api-key"):
            return self._gemini_error(403, "Method doesn't allow unregistered callers.")
        chat = [
            {"name": f"models/{model}", "supportedGenerationMethods": ["generateContent"]} for model in behavior.models
        ]
        embedding = {"name": "models/text-embedding-test", "supportedGenerationMethods": ["embedContent"]}
        return web.json_response({"models": [*chat, embedding]})

    @staticmethod
    def _gemini_error(status: int, message: str, reason: str | None = None) -> web.Response:
        statuses = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
        error: dict[str, Any] = {"code": status, "message": message, "status": statuses.get(status, "INTERNAL")}
        if reason is not None:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
        return web.json_response({"error": error}, status=status)


def main() -> None:
    """Serve standalone (for `make bench`): prints the port, runs until killed."""
    server = MockUpstream()
    server.start()
    print(server.port, flush=True)  # noqa: T201 - the benchmark reads the port from here
    threading.Event().wait()


if __name__ == "__main__":
    main()
