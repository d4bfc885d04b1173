"""Objects as files under one directory (the embedded default); downloads through Lyss-signed URLs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import errno
import hashlib
import hmac
import shutil
import time
from pathlib import Path
from uuid import UUID

import msgspec

from app.settings import KeyRing
from app.storage.base import TENANTS_PREFIX, StorageError, object_key

DOWNLOAD_PATH = "/api/objects"


class _Grant(msgspec.Struct, frozen=True):
    key: str
    filename: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LocalStore:
    """Every API replica and worker must see the same `root` (one host, or a shared volume)."""

    def __init__(self, root: Path, keyring: KeyRing, *, url_ttl_seconds: int) -> None:
        self.root = root
        self.keyring = keyring
        self.url_ttl_seconds = url_ttl_seconds

    def _path(self, tenant_id: UUID | None, name: str) -> Path:
        return self.root / object_key(tenant_id, name)

    async def put(self, tenant_id: UUID | None, name: str, source: Path, *, content_type: str) -> int:
        target = self._path(tenant_id, name)
        # Copied aside and renamed when complete: a reader never sees half an object, a failure leaves none.
        partial = target.with_name(f"{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.copyfile, source, partial)
            partial.replace(target)
        except OSError as error:
            with contextlib.suppress(OSError):  # nothing to clean when the directory itself is unusable
                partial.unlink(missing_ok=True)
            reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or type(error).__name__)
            raise StorageError(f"Could not store '{name}' in {self.root}: {reason}.") from None
        return target.stat().st_size

    async def exists(self, tenant_id: UUID | None, name: str) -> bool:
        return self._path(tenant_id, name).is_file()

    async def fetch(self, tenant_id: UUID | None, name: str, target: Path) -> None:
        path = self._path(tenant_id, name)
        if not path.is_file():
            raise StorageError(f"No object '{name}'.")
        await asyncio.to_thread(shutil.copyfile, path, target)

    async def read(self, tenant_id: UUID | None, name: str) -> bytes:
        path = self._path(tenant_id, name)
        if not path.is_file():
            raise StorageError(f"No object '{name}'.")
        return await asyncio.to_thread(path.read_bytes)

    async def download_url(self, tenant_id: UUID | None, name: str, *, filename: str) -> str:
        grant = _Grant(
            key=object_key(tenant_id, name), filename=filename, expires=int(time.time()) + self.url_ttl_seconds
        )
        payload = msgspec.json.encode(grant)
        return f"{DOWNLOAD_PATH}/{_b64(payload)}.{_b64(self._sign(self.keyring.current.secret, payload))}"

    def granted_file(self, token: str) -> tuple[Path, str] | None:
        """The file and download name a URL of `download_url` grants, or None if forged, altered or expired."""
        encoded, _, signature = token.partition(".")
        try:
            payload, presented = _unb64(encoded), _unb64(signature)
            grant = msgspec.json.decode(payload, type=_Grant)
        except (ValueError, msgspec.DecodeError):
            return None
        if not any(hmac.compare_digest(self._sign(key.secret, payload), presented) for key in self.keyring.keys):
            return None
        path = self.root / grant.key
        if grant.expires < time.time() or not grant.key.startswith(f"{TENANTS_PREFIX}/") or not path.is_file():
            return None
        return path, grant.filename

    @staticmethod
    def _sign(secret: bytes, payload: bytes) -> bytes:
        return hmac.new(secret, b"object-url:" + payload, hashlib.sha256).digest()

    async def delete(self, tenant_id: UUID | None, name: str) -> None:
        self._path(tenant_id, name).unlink(missing_ok=True)

    async def names(self, tenant_id: UUID | None, name_prefix: str = "") -> list[str]:
        space = self._path(tenant_id, "x").parent
        if not space.is_dir():
            return []
        return sorted(
            name
            for path in space.rglob("*")
            if path.is_file()
            and (name := path.relative_to(space).as_posix()).startswith(name_prefix)
            and not name.endswith(".partial")
        )

    async def delete_older_than(self, cutoff: datetime.datetime, *, name_prefix: str) -> int:
        removed = 0
        for path in (self.root / TENANTS_PREFIX).glob(f"*/{name_prefix}*"):
            if path.is_file() and path.stat().st_mtime < cutoff.timestamp():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".lyss-write-check"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise StorageError(f"The storage directory {self.root} is not writable: {error.strerror}.") from None
