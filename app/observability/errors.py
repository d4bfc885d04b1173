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
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from app.errors import ServiceError
from app.observability.logging import get_logger

logger = get_logger("lyss.errors")

# What the database layer raises that can be the client's doing; `database_refusal` tells which it is.
DATABASE_ERRORS: tuple[type[Exception], ...] = (RepositoryError, DBAPIError, StaleDataError, ObjectDeletedError)


def _is_data_exception(exception: BaseException) -> bool:
    """PostgreSQL refused a value (SQLSTATE class 22, data exception): input that got past validation."""
    cause: BaseException | None = exception
    while cause is not None:
        if isinstance(cause, DBAPIError):
            return str(getattr(cause.orig, "sqlstate", "") or "").startswith("22")
        cause = cause.__cause__
    return False


def database_refusal(exception: Exception) -> tuple[int, str] | None:
    """The client-facing status and message of a database error the client can cause, or None (a bug: 500).

    A row hidden by row-level security is indistinguishable from a missing one, and one deleted by another
    request between this one's read and write is gone too: all are a 404. A unique or foreign key a
    service did not check first (or that a concurrent request took) is a 409. A value PostgreSQL refuses
    is the net under the edge's validation, so that such input is a 400 (the transaction rolls back).
    """
    if isinstance(exception, NotFoundError):
        return 404, "Not found."
    if isinstance(exception, StaleDataError | ObjectDeletedError):
        return 404, "Not found (it was deleted meanwhile)."
    if isinstance(exception, DuplicateKeyError | IntegrityError | ForeignKeyError | DatabaseIntegrityError):
        return 409, "This conflicts with an existing resource."
    if _is_data_exception(exception):
        return 400, "A value in the request is not one the database can store (out of range or malformed)."
    return None


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


def database_error_handler(
    request: Request[object, object, State], exception: Exception
) -> Response[dict[str, object]]:
    refusal = database_refusal(exception)
    if refusal is None:
        return internal_error_handler(request, exception)
    logger.info("database refused the request", path=request.url.path, error=str(exception)[:300])
    return _error_response(request, *refusal)
