"""Downloads of the local object store: a Lyss-signed, short-lived URL is the only credential."""

from __future__ import annotations

import mimetypes
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import File

from app.errors import NotFound
from app.storage.base import ObjectStore
from app.storage.local import DOWNLOAD_PATH, LocalStore


class ObjectController(Controller):
    path = DOWNLOAD_PATH
    tags = ["storage"]

    @get("/{token:str}", opt={"exclude_from_auth": True}, summary="Download an object through a signed URL")
    async def download(
        self, object_store: NamedDependency[ObjectStore], token: FromPath[str], request: Request[Any, Any, State]
    ) -> File:
        granted = object_store.granted_file(token) if isinstance(object_store, LocalStore) else None
        if granted is None:
            raise NotFound("This download link is invalid or has expired; ask for a new one.")
        path, filename = granted
        media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return File(path, filename=filename, media_type=media_type)
