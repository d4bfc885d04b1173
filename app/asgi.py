"""ASGI entry point for granian workers: settings from the environment, logging, then create_app."""

from __future__ import annotations

from litestar import Litestar

from app.main import create_app
from app.observability.logging import configure_logging
from app.settings import load_settings


def app_factory() -> Litestar:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
