"""Object storage: one interface, a local-directory backend and an S3 backend, keys under tenants/<id>/."""

from __future__ import annotations

from app.settings import Settings
from app.storage.base import ObjectStore, StorageError
from app.storage.local import LocalStore
from app.storage.s3 import S3Store

__all__ = ["LocalStore", "ObjectStore", "S3Store", "StorageError", "create_object_store"]


def create_object_store(settings: Settings) -> ObjectStore:
    """The store `LYSS_STORAGE_BACKEND` names, configured from the settings."""
    if settings.storage_backend == "s3":
        return S3Store.from_settings(settings)
    return LocalStore(settings.storage_path, settings.jwt_keyring, url_ttl_seconds=settings.storage_url_ttl_seconds)
