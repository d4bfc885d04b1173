"""The /v1 API in the OpenAPI document: entries for documentation only, as Litestar does not describe a mount."""

from __future__ import annotations

from typing import Any, Literal, cast

import msgspec
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from app.gateway.dialects.anthropic import CountTokensRequest, MessagesRequest
from app.gateway.dialects.media import ImageRequest, ModerationRequest, SpeechRequest
from app.gateway.dialects.openai import ChatRequest, EmbeddingsRequest
from app.gateway.dialects.rerank import RerankRequest
from app.gateway.dialects.responses import ResponsesRequest
from app.gateway.dialects.transcription import MAX_FIELD_BYTES, RESPONSE_FORMATS

TAG = "gateway (/v1)"
# Gateway components get a prefix of their own: their names (`_Message`, `_Tool`) are the dialects' and would
# collide with each other's and with those Litestar generates for the rest of the API.
PREFIX = "V1"
# Either header carries an API key, on every /v1 path (the Anthropic SDK sends `x-api-key`).
SECURITY: list[SecurityRequirement] = [{"LyssApiKey": []}, {"LyssApiKeyHeader": []}]
SECURITY_SCHEMES = {
    "LyssApiKey": SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="sk-lyss-…",
        description="An API key issued in the portal or by `POST /api/tokens`: `Authorization: Bearer sk-lyss-…`.",
    ),
    "LyssApiKeyHeader": SecurityScheme(
        type="apiKey",
        name="x-api-key",
        security_scheme_in="header",
        description="The same API key in the header the Anthropic SDK sends.",
    ),
}


class _OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    """Every error of the /v1 API outside /v1/messages."""

    error: _OpenAIErrorDetail


class _AnthropicErrorDetail(msgspec.Struct):
    type: str
    message: str


class AnthropicError(msgspec.Struct):
    """Every error under /v1/messages."""

    type: Literal["error"]
    error: _AnthropicErrorDetail


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    """The models this API key may use."""

    object: Literal["list"]
    data: list[Model]


class _PromptTokensDetails(msgspec.Struct):
    # Of `prompt_tokens`, those read from the provider's prompt cache.
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptTokensDetails | None = None


class _Choice(msgspec.Struct):
    index: int
    message: dict[str, Any]
    finish_reason: str | None


class ChatCompletion(msgspec.Struct):
    """The provider's answer in the OpenAI format (adapted when the channel speaks another)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage | None = None


class _Embedding(msgspec.Struct):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingList(msgspec.Struct):
    object: Literal["list"]
    data: list[_Embedding]
    model: str
    usage: _Usage | None = None


class _RerankDocument(msgspec.Struct):
    text: str


class _RerankResult(msgspec.Struct):
    index: int
    relevance_score: float
    document: _RerankDocument | None = None


class _RerankUsage(msgspec.Struct):
    total_tokens: int


class _BilledUnits(msgspec.Struct):
    search_units: int


class _RerankMeta(msgspec.Struct):
    billed_units: _BilledUnits


class RerankList(msgspec.Struct):
    """Results best first, in the union of Cohere's (`meta.billed_units`) and Jina's (`usage`) answers."""

    id: str
    model: str
    results: list[_RerankResult]
    usage: _RerankUsage
    meta: _RerankMeta


class _MessageUsage(msgspec.Struct):
    # Not counting `cache_read_input_tokens` and `cache_creation_input_tokens`, as Anthropic reports it.
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class Message(msgspec.Struct):
    """The provider's answer in the Anthropic format (adapted when the channel speaks another)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[dict[str, Any]]
    model: str
    stop_reason: str | None
    usage: _MessageUsage


class TokenCount(msgspec.Struct):
    input_tokens: int


class _InputTokensDetails(msgspec.Struct):
    cached_tokens: int
    cache_write_tokens: int


class _OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int


class _ResponseUsage(msgspec.Struct):
    input_tokens: int
    input_tokens_details: _InputTokensDetails
    output_tokens: int
    output_tokens_details: _OutputTokensDetails
    total_tokens: int


class Response(msgspec.Struct):
    """A Response object of the OpenAI Responses API, the request's parameters echoed in it."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[dict[str, Any]]
    usage: _ResponseUsage | None


class ResponseDeleted(msgspec.Struct):
    id: str
    object: Literal["response"]
    deleted: bool


class ResponseItemList(msgspec.Struct):
    """A page of a stored response's input items (`first_id` and `last_id` are null on an empty page)."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class _Image(msgspec.Struct):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesAnswer(msgspec.Struct):
    """The provider's images; the call is billed per image returned."""

    created: int
    data: list[_Image]


class _TranscriptionUsage(msgspec.Struct):
    type: Literal["duration", "tokens"]
    seconds: float | None = None


class Transcription(msgspec.Struct):
    """The provider's transcription as it answered it: `json` and `verbose_json` (with `duration`, what the call
    is billed); `text`, `srt` and `vtt` come as text in their own content type."""

    text: str
    duration: float | None = None
    language: str | None = None
    usage: _TranscriptionUsage | None = None


class _ModerationResult(msgspec.Struct):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationAnswer(msgspec.Struct):
    id: str
    model: str
    results: list[_ModerationResult]


_COMPONENTS: tuple[type[msgspec.Struct], ...] = (
    *(ChatRequest, EmbeddingsRequest, RerankRequest, MessagesRequest, CountTokensRequest, ResponsesRequest),
    *(OpenAIError, AnthropicError, ModelList, Model, ChatCompletion, EmbeddingList, RerankList, Message, TokenCount),
    *(Response, ResponseDeleted, ResponseItemList),
    *(ImageRequest, ModerationRequest, SpeechRequest, ImagesAnswer, ModerationAnswer, Transcription),
)


def _ref(component: type[msgspec.Struct]) -> Reference:
    return Reference(ref=f"#/components/schemas/{PREFIX}{component.__name__}")


def _json(component: type[msgspec.Struct]) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=_ref(component))}


def _operation(
    operation_id: str,
    summary: str,
    answer: type[msgspec.Struct] | None,
    *,
    body: type[msgspec.Struct] | None = None,
    error: type[msgspec.Struct] = OpenAIError,
    streams: bool = False,
    parameters: list[Parameter | Reference] | None = None,
    form: RequestBody | None = None,
    texts: bool = False,
) -> Operation:
    """`answer` None: the answer is the provider's audio, in its own content type; `form`: a body that is not
    JSON; `texts`: the answer may also be plain text."""
    if answer is None:
        content = {"audio/*": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))}
    else:
        content = _json(answer)
    if texts:
        content["text/plain"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
    if streams:
        content["text/event-stream"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
    return Operation(
        tags=[TAG],
        summary=summary,
        operation_id=operation_id,
        parameters=parameters,
        request_body=form if body is None else RequestBody(content=_json(body), required=True),
        responses={
            "200": OpenAPIResponse(
                description="Streamed as server-sent events when the body says `stream: true`." if streams else "OK",
                content=content,
            ),
            "default": OpenAPIResponse(description=f"An error, in the {error.__name__} shape.", content=_json(error)),
        },
        security=SECURITY,
    )


def _transcription_form() -> RequestBody:
    """The multipart form `/v1/audio/transcriptions` reads (`read_upload` checks the same fields)."""
    text = Schema(type=OpenAPIType.STRING, max_length=MAX_FIELD_BYTES)
    form = Schema(
        type=OpenAPIType.OBJECT,
        required=["file", "model"],
        properties={
            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
            "model": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_FIELD_BYTES),
            "language": text,
            "prompt": text,
            "response_format": Schema(type=OpenAPIType.STRING, enum=list(RESPONSE_FORMATS)),
            "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1),
            "timestamp_granularities[]": Schema(
                type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING, enum=["word", "segment"])
            ),
        },
    )
    return RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True)


def _paths() -> dict[str, PathItem]:
    model = Parameter(name="model", param_in="path", required=True, schema=Schema(type=OpenAPIType.STRING))
    response_id = Parameter(name="response_id", param_in="path", required=True, schema=Schema(type=OpenAPIType.STRING))
    listing: list[Parameter | Reference] = [
        response_id,
        Parameter(name="limit", param_in="query", schema=Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=100)),
        Parameter(name="order", param_in="query", schema=Schema(type=OpenAPIType.STRING, enum=["asc", "desc"])),
        Parameter(name="after", param_in="query", schema=Schema(type=OpenAPIType.STRING)),
        Parameter(name="before", param_in="query", schema=Schema(type=OpenAPIType.STRING)),
    ]
    return {
        "/v1/chat/completions": PathItem(
            post=_operation(
                "GatewayChatCompletions",
                "Chat completion (OpenAI format)",
                ChatCompletion,
                body=ChatRequest,
                streams=True,
            )
        ),
        "/v1/embeddings": PathItem(
            post=_operation("GatewayEmbeddings", "Embeddings (OpenAI format)", EmbeddingList, body=EmbeddingsRequest)
        ),
        "/v1/rerank": PathItem(
            post=_operation(
                "GatewayRerank", "Rerank documents by a query (Cohere and Jina format)", RerankList, body=RerankRequest
            )
        ),
        "/v1/images/generations": PathItem(
            post=_operation("GatewayImages", "Generate images (OpenAI format)", ImagesAnswer, body=ImageRequest)
        ),
        "/v1/moderations": PathItem(
            post=_operation(
                "GatewayModerations", "Moderate text (OpenAI format)", ModerationAnswer, body=ModerationRequest
            )
        ),
        "/v1/audio/speech": PathItem(
            post=_operation("GatewaySpeech", "Text to speech: the provider's audio", None, body=SpeechRequest)
        ),
        "/v1/audio/transcriptions": PathItem(
            post=_operation(
                "GatewayTranscriptions",
                "Speech to text (OpenAI format): JSON, or text, srt or vtt as asked",
                Transcription,
                form=_transcription_form(),
                texts=True,
            )
        ),
        "/v1/models": PathItem(get=_operation("GatewayModels", "The models this API key may use", ModelList)),
        "/v1/models/{model}": PathItem(get=_operation("GatewayModel", "One model", Model, parameters=[model])),
        "/v1/messages": PathItem(
            post=_operation(
                "GatewayMessages",
                "Messages (Anthropic format)",
                Message,
                body=MessagesRequest,
                error=AnthropicError,
                streams=True,
            )
        ),
        "/v1/responses": PathItem(
            post=_operation(
                "GatewayResponses",
                "Responses (OpenAI Responses API, without stored responses)",
                Response,
                body=ResponsesRequest,
                streams=True,
            )
        ),
        "/v1/messages/count_tokens": PathItem(
            post=_operation(
                "GatewayCountTokens",
                "Count the input tokens of a Messages request",
                TokenCount,
                body=CountTokensRequest,
                error=AnthropicError,
            )
        ),
        "/v1/responses/{response_id}": PathItem(
            get=_operation("GatewayResponse", "A stored response of this API key", Response, parameters=[response_id]),
            delete=_operation(
                "GatewayResponseDelete", "Delete a stored response", ResponseDeleted, parameters=[response_id]
            ),
        ),
        "/v1/responses/{response_id}/input_items": PathItem(
            get=_operation(
                "GatewayResponseInputItems",
                "The input items of a stored response, a page at a time",
                ResponseItemList,
                parameters=listing,
            )
        ),
    }


def _schemas() -> dict[str, Schema]:
    """JSON Schema of the structs that decode the bodies (so the document cannot drift from what is checked)
    and of the answers, from msgspec."""
    _, components = msgspec.json.schema_components(_COMPONENTS, ref_template=f"#/components/schemas/{PREFIX}{{name}}")
    # Plain JSON Schema: the document serialises a dict as it is, where it expects a `Schema`.
    return {f"{PREFIX}{name}": cast(Schema, schema) for name, schema in components.items()}


def document_gateway(openapi: OpenAPI) -> None:
    """Add the /v1 operations, their schemas and the API-key security schemes to Litestar's document."""
    openapi.paths = {**(openapi.paths or {}), **_paths()}
    openapi.components.schemas.update(_schemas())
    openapi.components.security_schemes = {**(openapi.components.security_schemes or {}), **SECURITY_SCHEMES}
