"""ASGI entry point for granian workers: settings from the environment, logging, then create_app."""

from __future__ import annotations

import gc
import os
import signal

from litestar import Litestar

from app.main import create_app
from app.observability.logging import configure_logging, resolved_log_format
from app.settings import load_settings


def app_factory() -> Litestar:
    # granian forks this worker with its server's signal handlers, which here only set a flag on a copy of the
    # server: a Ctrl-C while the app loads was lost, and the server waited out its kill timeout (and said it
    # killed the worker). Note a stop request now; repeat it once granian's worker handlers are in place,
    # which they are when the lifespan starts.
    stop_requests: list[int] = []

    def note_stop_request(signum: int, _: object) -> None:
        stop_requests.append(signum)

    previous = {stop: signal.signal(stop, note_stop_request) for stop in (signal.SIGINT, signal.SIGTERM)}
    settings = load_settings()
    configure_logging(settings.log_level, resolved_log_format(settings.log_format, embedded=settings.embedded_database))
    app = create_app(settings)

    async def repeat_stop_request() -> None:
        # A server that set no handlers of its own gets the ones it had back, lest a stop request go unheard.
        for stop, handler in previous.items():
            if signal.getsignal(stop) is note_stop_request:
                signal.signal(stop, handler)
        if stop_requests:
            os.kill(os.getpid(), stop_requests[0])

    app.on_startup.append(repeat_stop_request)
    # Everything built so far lives as long as the worker: keep it out of the collector's full passes,
    # which otherwise walk all of it every few thousand requests (a p99 spike under load).
    gc.freeze()
    return app
