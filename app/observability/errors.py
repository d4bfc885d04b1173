"""Exceptions that reach the edge: logged in full, answered with a status and a message that reveal nothing."""

from __future__ import annotations

import socket

import asyncpg
import redis.exceptions
from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import MediaType, Request, Response
from litestar.datastructures import State
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
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


# A dependency that did not answer or give a connection in time: the same request may well succeed a moment later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    PoolTimeout,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)
UNAVAILABLE_DETAIL = "The service is temporarily unavailable; retry in a few seconds."
RETRY_AFTER = {"Retry-After": "5"}


def unavailable_cause(exception: BaseException) -> BaseException | None:
    """What made the request fail if it is PostgreSQL or Redis unreachable or out of connections (also when
    wrapped by SQLAlchemy or raised while handling another error), else None.

    Such a failure is a 503 with Retry-After, not a bug's 500: a client or load balancer should retry it.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exception]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, _UNAVAILABLE):
            return cause
        original = getattr(cause, "orig", None)
        pending += [cause.__cause__, cause.__context__, original if isinstance(original, BaseException) else None]
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
    if (cause := unavailable_cause(exception)) is not None:
        logger.warning("dependency unavailable", path=request.url.path, error=type(cause).__name__)
        return _error_response(request, HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE_DETAIL, RETRY_AFTER)
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
