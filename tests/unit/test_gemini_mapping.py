"""The Gemini adapter's translation: an OpenAI chat request to `generateContent` and its answer, stream and
usage back, as Gemini's API documents them."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from app.gateway.adapters.base import UpstreamError, Usage
from app.gateway.adapters.gemini import (
    SIGNATURE_MARK,
    _StreamTranslator,
    gemini_usage,
    reclassified,
    to_gemini_request,
    to_openai_response,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "object", "properties": {}, "additionalProperties": False}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_a_conversation_with_tools_images_and_settings_becomes_a_generate_content_request() -> None:
    body: dict[str, Any] = {
        "model": "gemini-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
            {"role": "user", "content": "And the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                    {
                        "id": f"b{SIGNATURE_MARK}c2ln",
                        "type": "function",
                        "function": {"name": "time", "arguments": "not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": '{"celsius": 21}'},
            {"role": "tool", "tool_call_id": f"b{SIGNATURE_MARK}c2ln", "content": "noon"},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "n": 2,
        "seed": 7,
        "stop": "END",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object", "additionalProperties": False}},
        },
    }
    request = to_gemini_request(body)

    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric."}]}
    assert [content["role"] for content in request["contents"]] == ["user", "model", "user"]
    assert request["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
        {"text": "And the weather?"},
    ]
    assert request["contents"][1]["parts"] == [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "time", "args": {}}, "thoughtSignature": "c2ln"},
    ]
    # Matched by name through the call's id; an answer that is not an object is wrapped in one.
    assert request["contents"][2]["parts"] == [
        {"functionResponse": {"name": "weather", "response": {"celsius": 21}}},
        {"functionResponse": {"name": "time", "response": {"result": "noon"}}},
    ]
    [declaration] = request["tools"][0]["functionDeclarations"]
    assert declaration["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "object", "properties": {}}},
        "required": ["city"],
    }
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    assert request["generationConfig"] == {
        "maxOutputTokens": 300,
        "temperature": 0.2,
        "topP": 0.9,
        "seed": 7,
        "candidateCount": 2,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object"},
    }
    assert "model" not in request


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (None, None),
    ],
)
def test_tool_choice_becomes_a_function_calling_mode(choice: Any, config: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER], "tool_choice": choice}
    assert to_gemini_request(body).get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


def test_an_image_link_is_refused_without_retrying_elsewhere() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]}
        ]
    }
    with pytest.raises(UpstreamError) as refused:
        to_gemini_request(body)
    assert (refused.value.status, refused.value.retryable) == (400, False)
    assert "data: URL" in refused.value.message


def test_an_answer_with_text_a_function_call_and_every_usage_figure_becomes_a_chat_completion() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking it over", "thought": True},
                        {"text": "Let me check. "},
                        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            },
            {"content": {"role": "model", "parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            {"content": {"role": "model", "parts": []}, "finishReason": "SAFETY", "index": 2},
        ],
        "usageMetadata": {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 800,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 2,
            "toolUsePromptTokenCount": 10,
            "totalTokenCount": 1017,
        },
        "modelVersion": "gemini-x-001",
        "responseId": "abc",
    }
    completion = to_openai_response(answer, "gemini-x")
    first, second, third = completion.body["choices"]
    assert first["message"]["content"] == "Let me check. "
    [call] = first["message"]["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": '{"city":"Paris"}'}
    assert call["id"].endswith(SIGNATURE_MARK + "c2ln")
    assert [first["finish_reason"], second["finish_reason"], third["finish_reason"]] == [
        "tool_calls",
        "length",
        "content_filter",
    ]
    assert completion.usage == Usage(1010, 7, cached_tokens=800)
    assert completion.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 800}
    assert completion.body["model"] == "gemini-x-001"


@pytest.mark.parametrize("figure", [-5, 1.5, "12", True, None])
def test_a_figure_that_is_not_a_count_counts_nothing(figure: Any) -> None:
    usage = gemini_usage({"promptTokenCount": 10, "candidatesTokenCount": figure, "cachedContentTokenCount": figure})
    assert usage == Usage(10, 0)
    assert gemini_usage({"promptTokenCount": 10**12}) == Usage(2**31 - 1, 0)


def test_a_blocked_prompt_is_a_filtered_answer() -> None:
    completion = to_openai_response({"promptFeedback": {"blockReason": "SAFETY"}}, "gemini-x")
    assert completion.body["choices"][0]["finish_reason"] == "content_filter"
    assert completion.usage is None


def test_stream_answers_become_chunks_with_the_last_usage() -> None:
    translator = _StreamTranslator("gemini-x")
    events = [
        {
            "candidates": [{"content": {"parts": [{"text": "Hello "}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 9},
        },
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "thoughtsTokenCount": 4},
        },
    ]
    chunks = [chunk for event in events for chunk in translator.translate(event)] + translator.final()
    decoded = [msgspec.json.decode(chunk.raw) for chunk in chunks]
    assert decoded[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hello "}
    tool_delta = decoded[1]["choices"][0]
    assert tool_delta["delta"]["tool_calls"][0]["index"] == 0
    assert tool_delta["delta"]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"Oslo"}'}
    assert tool_delta["finish_reason"] == "tool_calls"
    assert decoded[2]["choices"] == []
    assert chunks[2].usage_only
    assert chunks[2].usage == Usage(9, 7)
    assert chunks[0].tokens > 0


def test_a_stream_that_ends_before_a_finish_reason_is_a_cut() -> None:
    translator = _StreamTranslator("gemini-x")
    translator.translate({"candidates": [{"content": {"parts": [{"text": "Hel"}]}, "index": 0}]})
    with pytest.raises(UpstreamError):
        translator.final()


def test_an_invalid_key_disables_the_channel_but_a_bad_request_does_not() -> None:
    key = UpstreamError(
        "x", status=400, retryable=False, body=b'{"error": {"details": [{"reason": "API_KEY_INVALID"}]}}'
    )
    assert reclassified(key).disables_channel
    plain = UpstreamError("x", status=400, retryable=False, body=b'{"error": {"status": "INVALID_ARGUMENT"}}')
    assert reclassified(plain) is plain
