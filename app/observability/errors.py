"""Exceptions that reach the edge: logged in full, answered with a status and a message that reveal nothing."""

from __future__ import annotations

from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import MediaType, Request, Response
from litestar.datastructures import State
from litestar.status_codes import HTTP_404_NOT_FOUND, HTTP_409_CONFLICT, HTTP_500_INTERNAL_SERVER_ERROR

from app.errors import ServiceError
from app.observability.logging import get_logger

logger = get_logger("lyss.errors")


def _error_response(
    request: Request[object, object, State], status_code: int, detail: str, headers: dict[str, str] | None = None
) -> Response[dict[str, object]]:
    return Response(
        {"status_code": status_code, "detail": detail, "request_id": request.scope.get("state", {}).get("request_id")},
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def service_error_handler(
    request: Request[object, object, State], exception: ServiceError
) -> Response[dict[str, object]]:
    return _error_response(request, exception.status_code, exception.detail, exception.headers)


def internal_error_handler(
    request: Request[object, object, State], exception: Exception
) -> Response[dict[str, object]]:
    logger.error("unhandled exception", path=request.url.path, exc_info=exception)
    return _error_response(
        request, HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error; quote the request id when reporting it."
    )


def repository_error_handler(
    request: Request[object, object, State], exception: RepositoryError
) -> Response[dict[str, object]]:
    # A row hidden by row-level security is indistinguishable from a missing one: both are a 404.
    if isinstance(exception, NotFoundError):
        return _error_response(request, HTTP_404_NOT_FOUND, "Not found.")
    if isinstance(exception, DuplicateKeyError | IntegrityError | ForeignKeyError):
        logger.info("conflict", path=request.url.path, error=str(exception))
        return _error_response(request, HTTP_409_CONFLICT, "This conflicts with an existing resource.")
    return internal_error_handler(request, exception)
