"""Objects in an S3-compatible bucket (AWS S3, MinIO, ...) through aioboto3; downloads by presigned URL."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.settings import Settings
from app.storage.base import TENANTS_PREFIX, StorageError, object_key

_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 2},
    signature_version="s3v4",
    s3={"addressing_style": "path"},
)


class S3Store:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        url_ttl_seconds: int,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.url_ttl_seconds = url_ttl_seconds
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        if not settings.s3_bucket:
            raise StorageError("LYSS_STORAGE_BACKEND=s3 needs LYSS_S3_BUCKET.")
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            url_ttl_seconds=settings.storage_url_ttl_seconds,
        )

    def _client(self) -> Any:
        return self._session.client("s3", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def _failure(self, action: str, error: Exception) -> StorageError:
        # The provider's error code says what is wrong (NoSuchBucket, InvalidAccessKeyId, ...); the
        # endpoint says where. Neither carries the credentials.
        where = self.endpoint_url or "AWS S3"
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "error")
            return StorageError(f"Object storage at {where} refused to {action} (bucket '{self.bucket}'): {code}.")
        return StorageError(f"Object storage at {where} could not be reached to {action}: {type(error).__name__}.")

    async def put(self, tenant_id: UUID | None, name: str, source: Path, *, content_type: str) -> int:
        key = object_key(tenant_id, name)
        size = (await asyncio.to_thread(source.stat)).st_size
        try:
            async with self._client() as client:
                await client.upload_file(str(source), self.bucket, key, ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError) as error:
            raise self._failure("store an object", error) from None
        return size

    async def exists(self, tenant_id: UUID | None, name: str) -> bool:
        key = object_key(tenant_id, name)
        try:
            async with self._client() as client:
                await client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._failure("look up an object", error) from None
        except BotoCoreError as error:
            raise self._failure("look up an object", error) from None
        return True

    async def fetch(self, tenant_id: UUID | None, name: str, target: Path) -> None:
        try:
            async with self._client() as client:
                await client.download_file(self.bucket, object_key(tenant_id, name), str(target))
        except (ClientError, BotoCoreError) as error:
            raise self._failure("read an object", error) from None

    async def read(self, tenant_id: UUID | None, name: str) -> bytes:
        key = object_key(tenant_id, name)
        try:
            async with self._client() as client:
                response = await client.get_object(Bucket=self.bucket, Key=key)
                async with response["Body"] as body:
                    data: bytes = await body.read()
        except (ClientError, BotoCoreError) as error:
            raise self._failure("read an object", error) from None
        return data

    async def download_url(self, tenant_id: UUID | None, name: str, *, filename: str) -> str:
        key = object_key(tenant_id, name)
        try:
            async with self._client() as client:
                url: str = await client.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.bucket,
                        "Key": key,
                        "ResponseContentDisposition": f'attachment; filename="{filename}"',
                    },
                    ExpiresIn=self.url_ttl_seconds,
                )
        except (ClientError, BotoCoreError) as error:
            raise self._failure("sign a download", error) from None
        return url

    async def delete(self, tenant_id: UUID | None, name: str) -> None:
        try:
            async with self._client() as client:
                await client.delete_object(Bucket=self.bucket, Key=object_key(tenant_id, name))
        except (ClientError, BotoCoreError) as error:
            raise self._failure("delete an object", error) from None

    async def names(self, tenant_id: UUID | None, name_prefix: str = "") -> list[str]:
        space = object_key(tenant_id, "x")[:-1]
        found: list[str] = []
        try:
            async with self._client() as client:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{space}{name_prefix}"):
                    found += [item["Key"].removeprefix(space) for item in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as error:
            raise self._failure("list objects", error) from None
        return sorted(found)

    async def delete_older_than(self, cutoff: datetime.datetime, *, name_prefix: str) -> int:
        removed = 0
        try:
            async with self._client() as client:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{TENANTS_PREFIX}/"):
                    stale = [
                        {"Key": item["Key"]}
                        for item in page.get("Contents", [])
                        if item["Key"].split("/", 2)[-1].startswith(name_prefix) and item["LastModified"] < cutoff
                    ]
                    if stale:
                        await client.delete_objects(Bucket=self.bucket, Delete={"Objects": stale, "Quiet": True})
                        removed += len(stale)
        except (ClientError, BotoCoreError) as error:
            raise self._failure("delete old objects", error) from None
        return removed

    async def check(self) -> None:
        try:
            async with self._client() as client:
                await client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise self._failure("open the bucket", error) from None
