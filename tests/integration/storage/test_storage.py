"""Object storage: the S3 backend against a real S3-protocol server (moto's, on loopback) and the local one."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from pathlib import Path

import aioboto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from uuid_utils.compat import uuid7

from app.settings import new_key_entry, parse_keyring
from app.storage import LocalStore, S3Store, StorageError
from app.storage.base import object_key

SECRET = "s3-secret-never-shown"
BUCKET = "lyss-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_store(endpoint: str, bucket: str = BUCKET, ttl: int = 60) -> S3Store:
    return S3Store(
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test-key",
        secret_access_key=SECRET,
        url_ttl_seconds=ttl,
    )


async def keys_in_bucket(endpoint: str) -> list[str]:
    session = aioboto3.Session(aws_access_key_id="test-key", aws_secret_access_key=SECRET, region_name="us-east-1")
    async with session.client("s3", endpoint_url=endpoint) as client:
        listing = await client.list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
async def bucket(s3_endpoint: str) -> str:
    session = aioboto3.Session(aws_access_key_id="test-key", aws_secret_access_key=SECRET, region_name="us-east-1")
    async with session.client("s3", endpoint_url=s3_endpoint) as client:
        existing = (
            await client.list_objects_v2(Bucket=BUCKET)
            if BUCKET in [item["Name"] for item in (await client.list_buckets())["Buckets"]]
            else None
        )
        if existing is None:
            await client.create_bucket(Bucket=BUCKET)
        else:
            for item in existing.get("Contents", []):
                await client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return BUCKET


async def test_s3_upload_presigned_download_and_the_tenant_prefix(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(s3_endpoint)
    await store.check()
    tenant_a, tenant_b = uuid7(), uuid7()
    source = tmp_path / "report.csv"
    source.write_text("a,b\n1,2\n")
    assert await store.put(tenant_a, "exports/report.csv", source, content_type="text/csv") == 8
    assert await keys_in_bucket(s3_endpoint) == [f"tenants/{tenant_a}/exports/report.csv"]
    assert await store.exists(tenant_a, "exports/report.csv")
    assert not await store.exists(tenant_b, "exports/report.csv")  # the same name in another tenant's space
    assert await store.read(tenant_a, "exports/report.csv") == b"a,b\n1,2\n"

    url = await store.download_url(tenant_a, "exports/report.csv", filename="report.csv")
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=60" in url
    async with httpx.AsyncClient() as http:
        downloaded = await http.get(url)
        assert downloaded.content == b"a,b\n1,2\n"
        assert downloaded.headers["content-disposition"] == 'attachment; filename="report.csv"'
        tampered = await http.get(url.replace("exports/report.csv", "exports/other.csv"))
        assert tampered.status_code == 403

    for escape in ("../x", "/etc/passwd", "a/../../b", "a//b", "", "x" * 600, "exports/r\u00e9sum\u00e9"):
        with pytest.raises(StorageError):
            await store.exists(tenant_a, escape)

    cutoff = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    assert await store.delete_older_than(cutoff, name_prefix="other/") == 0
    assert await store.delete_older_than(cutoff, name_prefix="exports/") == 1
    assert await keys_in_bucket(s3_endpoint) == []


async def test_s3_errors_say_what_is_wrong_without_the_credentials(s3_endpoint: str, tmp_path: Path) -> None:
    source = tmp_path / "x.csv"
    source.write_text("x")
    with pytest.raises(StorageError) as missing:
        await s3_store(s3_endpoint, bucket="no-such-bucket").put(uuid7(), "x.csv", source, content_type="text/csv")
    assert "NoSuchBucket" in missing.value.detail
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = s3_store(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(StorageError) as refused:
        await unreachable.check()
    assert f"127.0.0.1:{closed_port}" in refused.value.detail
    for error in (missing.value, refused.value):
        assert SECRET not in error.detail
        assert "test-key" not in error.detail


async def test_local_store_signed_links_expire_and_cannot_be_altered(tmp_path: Path) -> None:
    keyring = parse_keyring(new_key_entry(), "LYSS_JWT_KEYS")
    store = LocalStore(tmp_path / "objects", keyring, url_ttl_seconds=60)
    tenant = uuid7()
    source = tmp_path / "data.csv"
    source.write_text("hello")
    await store.put(tenant, "exports/data.csv", source, content_type="text/csv")
    assert (tmp_path / "objects" / object_key(tenant, "exports/data.csv")).read_text() == "hello"
    assert not list((tmp_path / "objects").rglob("*.partial"))

    url = await store.download_url(tenant, "exports/data.csv", filename="data.csv")
    token = url.removeprefix("/api/objects/")
    granted = store.granted_file(token)
    assert granted is not None
    assert granted[1] == "data.csv"
    payload, _, signature = token.partition(".")
    assert store.granted_file(f"{payload}.{signature[:-2]}xx") is None
    assert store.granted_file("garbage") is None
    other_keys = LocalStore(tmp_path / "objects", parse_keyring(new_key_entry(), "LYSS_JWT_KEYS"), url_ttl_seconds=60)
    assert other_keys.granted_file(token) is None
    expired = LocalStore(tmp_path / "objects", keyring, url_ttl_seconds=-1)
    stale_url = await expired.download_url(tenant, "exports/data.csv", filename="data.csv")
    assert store.granted_file(stale_url.removeprefix("/api/objects/")) is None

    # A directory that cannot be written is a clear error, with nothing left behind.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(StorageError) as unwritable:
        await LocalStore(blocked, keyring, url_ttl_seconds=60).put(tenant, "x.csv", source, content_type="text/csv")
    assert str(blocked) in unwritable.value.detail
    with pytest.raises(StorageError):
        await LocalStore(blocked, keyring, url_ttl_seconds=60).check()


@pytest.mark.parametrize("backend", ["s3", "local"])
async def test_names_lists_one_tenants_objects_and_nothing_of_another(
    backend: str, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    store = (
        s3_store(s3_endpoint)
        if backend == "s3"
        else LocalStore(tmp_path / "objects", parse_keyring(new_key_entry(), "LYSS_JWT_KEYS"), url_ttl_seconds=60)
    )
    tenant_a, tenant_b = uuid7(), uuid7()
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    for tenant, name in ((tenant_a, "b/notes.txt"), (tenant_a, "a.txt"), (tenant_b, "c.txt")):
        await store.put(tenant, name, source, content_type="text/plain")
    await store.put(None, "backups/x.dump", source, content_type="application/octet-stream")
    assert await store.names(tenant_a) == ["a.txt", "b/notes.txt"]
    assert await store.names(uuid7()) == []
    await store.delete(tenant_b, "c.txt")
    assert await store.names(tenant_b) == []


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_names_lists_one_space_under_a_prefix_sorted(
    backend: str, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    keyring = parse_keyring(new_key_entry(), "LYSS_JWT_KEYS")
    local = LocalStore(tmp_path / "objects", keyring, url_ttl_seconds=60)
    store = local if backend == "local" else s3_store(s3_endpoint)
    source = tmp_path / "archive.dump"
    source.write_text("dump")
    tenant = uuid7()
    for name in ("backups/scheduled/b.dump", "backups/scheduled/a.dump", "backups/manual.dump"):
        await store.put(None, name, source, content_type="application/octet-stream")
    await store.put(tenant, "backups/scheduled/tenant.dump", source, content_type="application/octet-stream")
    assert await store.names(None, "backups/scheduled/") == ["backups/scheduled/a.dump", "backups/scheduled/b.dump"]
    assert await store.names(None, "nothing/") == []
    assert await store.names(tenant, "backups/") == ["backups/scheduled/tenant.dump"]
    assert await store.names(None, "backups/") == [
        "backups/manual.dump",
        "backups/scheduled/a.dump",
        "backups/scheduled/b.dump",
    ]
    for name in ("backups/scheduled/b.dump", "backups/scheduled/a.dump", "backups/manual.dump"):
        await store.delete(None, name)
    await store.delete(tenant, "backups/scheduled/tenant.dump")
