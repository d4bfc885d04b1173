"""Rules every request meets before a handler sees it: JSON of the declared types, no NUL, nothing nested too deep.

PostgreSQL text cannot hold NUL (`\\u0000`), deep JSON overflows the decoders' stacks, and Litestar converts
bodies leniently (`0` would pass for `false`): each of these is refused here, once, with a 400 that names
the field, instead of surfacing later as a database error or a silently rewritten value. The /v1 gateway
applies the same JSON rules to its own bodies (`json_problem`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State, UploadFile
from litestar.enums import ParamType, RequestEncodingType
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.params import BodyKwarg, ParameterKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from app.errors import InvalidRequest

# A route that takes HTML form posts (the portal) carries this in its `opt`.
ACCEPTS_FORM = "accepts_form"
_FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}
# Deep enough for any real document (JSON schemas of tools included), far below the decoders' stack limits.
MAX_JSON_DEPTH = 64
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_AT_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$")


class JsonProblem(msgspec.Struct, frozen=True):
    """What is wrong in a JSON document and where (`messages[0].content`; empty for the document itself)."""

    path: str
    message: str

    def described(self, noun: str = "body") -> str:
        where = f"`{self.path}`" if self.path else f"The {noun}"
        return f"{where} {self.message}."


class JsonTooDeep(ValueError):
    """The document is nested deeper than the decoder's stack allows."""

    problem = JsonProblem("", f"is nested more than {MAX_JSON_DEPTH} levels deep")


def decode_json(raw: bytes) -> Any:
    """The document in `raw`: msgspec's DecodeError if it is not JSON, JsonTooDeep if it is nested too deep."""
    try:
        return msgspec.json.decode(raw)
    except RecursionError:
        raise JsonTooDeep from None


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def json_problem(raw: bytes, document: Any) -> JsonProblem | None:
    """The first NUL character or level too deep in `document` (decoded from `raw`), or None.

    The raw bytes decide what to look for: JSON carries NUL only as the escape `\\u0000`, and a document
    with no more brackets than the depth limit cannot exceed it. So the usual body costs three byte scans;
    a large one (many messages, tools) a walk of its containers by level, without paths; the paths are
    worked out only for a document that has a problem.
    """
    if b"\\u0000" in raw:
        problem = _first_problem(document, nul=True)
        if problem is not None:
            return problem
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than_limit(document):
        return _first_problem(document, nul=False)
    return None


def _deeper_than_limit(document: Any) -> bool:
    level = [document]
    for _ in range(MAX_JSON_DEPTH):
        below: list[Any] = []
        for container in level:
            values = container.values() if type(container) is dict else container
            below.extend(value for value in values if type(value) is dict or type(value) is list)
        if not below:
            return False
        level = below
    return True


def _first_problem(document: Any, *, nul: bool) -> JsonProblem | None:
    """The first NUL (when `nul`) or level beyond the limit, depth first, with its path."""
    pending: list[tuple[Any, str, int]] = [(document, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            if nul and "\x00" in value:
                return JsonProblem(path, "contains a NUL character (\\u0000), which is not accepted")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            return JsonProblem(path, f"is nested more than {MAX_JSON_DEPTH} levels deep")
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        for key, item in reversed(items):
            if nul and isinstance(key, str) and "\x00" in key:
                return JsonProblem(path, "has a key with a NUL character (\\u0000), which is not accepted")
            pending.append((item, _child(path, key), depth + 1))
    return None


def _refuse_nul_in_parameters(request: Request[Any, Any, State]) -> None:
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(f"The query parameter `{name.replace(chr(0), '')}` contains a NUL character.")
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest(f"The path parameter `{name}` contains a NUL character.")


# Keyed by the handler's function, not the handler: a handler keeps its app (and the app its database
# pool) alive, and a module-level cache must not.
_TIMESTAMP_PARAMETERS: dict[Callable[..., Any], frozenset[str]] = {}


def _timestamp_parameters(handler: BaseRouteHandler) -> frozenset[str]:
    """The query parameters a handler declares as datetimes or dates (by the name the client sends)."""
    if (known := _TIMESTAMP_PARAMETERS.get(handler.fn)) is not None:
        return known
    names = set()
    for field in handler.parsed_fn_signature.parameters.values():
        types = [inner.annotation for inner in field.inner_types] if field.is_optional else [field.annotation]
        if not any(isinstance(kind, type) and issubclass(kind, datetime.date) for kind in types):
            continue
        kwarg = field.kwarg_definition
        if kwarg is None:
            names.add(field.name)  # a plain parameter is a query parameter
        elif isinstance(kwarg, ParameterKwarg) and kwarg.param_type == ParamType.QUERY:
            names.add(kwarg.name or field.name)
    _TIMESTAMP_PARAMETERS[handler.fn] = frozenset(names)
    return _TIMESTAMP_PARAMETERS[handler.fn]


def _refuse_numeric_timestamps(request: Request[Any, Any, State]) -> None:
    # Litestar converts query strings leniently, so `before=0.5` would become 1970-01-01T00:00:00.5.
    for name in _timestamp_parameters(request.route_handler):
        value = request.query_params.get(name)
        if value is not None and _NUMBER.match(value):
            raise InvalidRequest(
                f"The query parameter `{name}` must be an ISO 8601 date and time (e.g. 2026-01-31T12:00:00Z)."
            )


def _validation_error(request: Request[Any, Any, State], error: msgspec.ValidationError) -> ValidationException:
    """The error in the shape Litestar's own validation uses: the message and the field's path as its key."""
    match = _AT_PATH.match(str(error))
    message, key = (match["message"], match["path"].lstrip(".")) if match else (str(error), "")
    if len(message) > 200:  # it may quote the client's value: cut, never a megabyte sent back
        message = f"{message[:200]}… ({len(message)} characters)"
    return ValidationException(
        detail=f"Validation failed for {request.method} {request.url.path}",
        extra=[{"message": message, "key": key, "source": "body"}],
    )


def _refuse_missing_body(request: Request[Any, Any, State]) -> None:
    # Litestar's own answer names only its parameter (`'data'`), which tells a client nothing.
    data_field = request.route_handler.parsed_data_field
    if data_field is None or data_field.is_optional or data_field.has_default:
        return
    body = data_field.kwarg_definition
    media_type = str(RequestEncodingType(body.media_type).value if isinstance(body, BodyKwarg) else "")
    if media_type in ("", RequestEncodingType.JSON.value):
        raise InvalidRequest("This request needs a JSON body (send it with 'Content-Type: application/json').")
    raise InvalidRequest(f"This request needs a body of type '{media_type}'.")


async def _check_json_body(request: Request[Any, Any, State]) -> None:
    raw = await request.body()
    if not raw:
        _refuse_missing_body(request)
        return
    try:
        document = decode_json(raw)
    except JsonTooDeep as error:
        raise InvalidRequest(error.problem.described()) from None
    except msgspec.DecodeError:
        return  # Litestar answers malformed JSON with its own 400, naming where it broke
    if (problem := json_problem(raw, document)) is not None:
        raise InvalidRequest(problem.described())
    data_field = request.route_handler.parsed_data_field
    if data_field is None:
        return
    # Strict: a JSON `0` is not `false`, `"5"` is not `5`; the handler's own (lenient) parse follows.
    try:
        msgspec.convert(document, data_field.annotation, strict=True)
    except msgspec.ValidationError as error:
        raise _validation_error(request, error) from None


async def _check_form(request: Request[Any, Any, State]) -> None:
    for name, value in (await request.form()).multi_items():
        if "\x00" in name or (not isinstance(value, UploadFile) and "\x00" in str(value)):
            raise InvalidRequest(f"The field `{name.replace(chr(0), '')}` contains a NUL character.")


async def check_request(request: Request[Any, Any, State]) -> None:
    """Refuse what no handler should see: NUL anywhere, a numeric timestamp, a body that is not JSON (415),
    JSON too deep or not of the declared types.

    Besides clear errors, the 415 closes a CSRF path: a cross-site form can send `text/plain` bodies
    without a preflight, but never `application/json`.
    """
    _refuse_nul_in_parameters(request)
    _refuse_numeric_timestamps(request)
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        _refuse_missing_body(request)
        return
    media_type = request.content_type[0]
    if media_type == "application/json" or media_type.endswith("+json"):
        await _check_json_body(request)
        return
    if media_type in _FORM_TYPES and request.route_handler.opt.get(ACCEPTS_FORM):
        await _check_form(request)
        return
    raise HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"Send the body as JSON with 'Content-Type: application/json' (got '{media_type or 'none'}').",
    )
