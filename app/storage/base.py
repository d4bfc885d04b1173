"""What every object store offers, and how object keys are made: always under `tenants/<tenant id>/`."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Protocol, runtime_checkable
from uuid import UUID

TENANTS_PREFIX = "tenants"
# Objects of the installation itself (database backups), outside every tenant's space.
PLATFORM_PREFIX = "platform"
# A name inside a tenant's space: path segments of safe characters, no `..`, no leading slash.
_NAME = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._/-]{1,512}$")


class StorageError(Exception):
    """The store could not do what was asked; `detail` says why without credentials or internals."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def object_key(tenant_id: UUID | None, name: str) -> str:
    """The full key of `name` in a tenant's space (the platform's for None). A name that would leave that
    space is refused."""
    if not _NAME.match(name) or "//" in name:
        raise StorageError(f"'{name}' is not a valid object name (letters, digits, . _ - and /, no '..').")
    return f"{PLATFORM_PREFIX}/{name}" if tenant_id is None else f"{TENANTS_PREFIX}/{tenant_id}/{name}"


# Checkable at run time: handlers receive it as a dependency, which Litestar checks by type.
@runtime_checkable
class ObjectStore(Protocol):
    """Files that outlive a request and that every API replica and worker can reach."""

    async def put(self, tenant_id: UUID | None, name: str, source: Path, *, content_type: str) -> int:
        """Store the file at `source` as `name`; return its size. Replaces an object of the same name."""

    async def exists(self, tenant_id: UUID | None, name: str) -> bool: ...

    async def fetch(self, tenant_id: UUID | None, name: str, target: Path) -> None:
        """Copy the object to the file `target` (large objects: backups)."""

    async def read(self, tenant_id: UUID | None, name: str) -> bytes:
        """The whole object (for small ones and tests); large downloads use `download_url`."""

    async def download_url(self, tenant_id: UUID | None, name: str, *, filename: str) -> str:
        """A short-lived URL that downloads the object as an attachment named `filename`, no sign-in needed."""

    async def delete(self, tenant_id: UUID | None, name: str) -> None: ...

    async def names(self, tenant_id: UUID | None, name_prefix: str = "") -> list[str]:
        """The names, sorted, of the objects in one space (the platform's for None) that begin with `name_prefix`."""

    async def delete_older_than(self, cutoff: datetime.datetime, *, name_prefix: str) -> int:
        """Delete, in every tenant's space, objects under `name_prefix` last written before `cutoff`."""

    async def check(self) -> None:
        """Raise StorageError if the store cannot be reached or written (for readiness and `lyss doctor`)."""
