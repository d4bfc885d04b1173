"""Rules every request body meets before a handler sees it: JSON, with the right content type."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

# A route that takes HTML form posts (the portal) carries this in its `opt`.
ACCEPTS_FORM = "accepts_form"
_FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


async def require_json_body(request: Request[object, object, State]) -> None:
    """Refuse a body that is not declared as JSON (415), instead of guessing at it.

    Besides clear errors, this closes a CSRF path: a cross-site form can send `text/plain` bodies
    without a preflight, but never `application/json`.
    """
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    media_type = request.content_type[0]
    if media_type == "application/json" or media_type.endswith("+json"):
        return
    if media_type in _FORM_TYPES and request.route_handler.opt.get(ACCEPTS_FORM):
        return
    raise HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"Send the body as JSON with 'Content-Type: application/json' (got '{media_type or 'none'}').",
    )
