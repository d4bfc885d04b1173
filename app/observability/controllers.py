"""Operations endpoints: liveness, readiness, version and metrics. No authentication, no tenant data."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncEngine

from app.observability.metrics import CONTENT_TYPE, render_metrics
from app.observability.schemas import Liveness, Readiness, Version
from app.observability.services import check_readiness
from app.redis_client import RedisDependency

PACKAGE_VERSION = version("lyss")


class OperationsController(Controller):
    tags = ["operations"]
    opt = {"exclude_from_auth": True}

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Liveness:
        return Liveness()

    @get("/readyz", summary="PostgreSQL and Redis are reachable")
    async def readyz(self, db_engine: NamedDependency[AsyncEngine], redis: RedisDependency) -> Response[Readiness]:
        readiness = await check_readiness(db_engine, redis)
        status_code = HTTP_200_OK if readiness.status == "ok" else HTTP_503_SERVICE_UNAVAILABLE
        return Response(readiness, status_code=status_code)

    @get("/metrics", summary="Prometheus metrics (scrape from inside the network; the proxy does not expose it)")
    async def metrics(
        self,
        job_queue: NamedDependency[RedisQueue],
        request: Request[Any, Any, State],
        db_engine: NamedDependency[AsyncEngine],
    ) -> Response[bytes]:
        body = await render_metrics(db_engine, job_queue)
        return Response(body, media_type=CONTENT_TYPE)

    @get("/api/version", summary="Name and version of this build")
    async def api_version(self) -> Version:
        return Version(name="lyss", version=PACKAGE_VERSION)
