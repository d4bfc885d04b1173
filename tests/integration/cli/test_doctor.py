"""`lyss doctor` against the suite's real PostgreSQL and Redis: safe settings pass, unsafe ones are named."""

from __future__ import annotations

from pathlib import Path

import redis
from click.testing import CliRunner

from app.cli import main
from app.gateway.usage import HEARTBEAT_KEY, HEARTBEAT_SECONDS
from app.settings import new_key_entry
from db.bootstrap import DatabaseUrls


def doctor(environment: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor"], env=environment)
    return result.exit_code, result.output


def production(database: DatabaseUrls, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database.app_url,
        "DATABASE_OWNER_URL": database.owner_url,
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": new_key_entry(),
        "LYSS_JWT_KEYS": new_key_entry(),
        "LYSS_PUBLIC_URL": "https://lyss.example.com",
        "LYSS_TRUSTED_PROXIES": "10.0.0.0/8",
        "LYSS_STORAGE_DIR": str(tmp_path / "objects"),
        "LYSS_DATA_DIR": str(tmp_path / "data"),
    }


def test_a_production_configuration_passes_and_says_what_it_checked(
    database: DatabaseUrls, redis_url: str, tmp_path: Path
) -> None:
    code, output = doctor(production(database, redis_url, tmp_path))
    assert code == 0, output
    assert "unsafe" not in output
    assert "PostgreSQL reachable; the app role is subject to RLS" in output
    assert "Redis reachable" in output
    assert "cookies are Secure" in output
    assert "every replica must share it" in output  # local storage with a real database: a warning only


def test_unsafe_settings_are_each_named_and_fail_the_check(
    database: DatabaseUrls, redis_url: str, postgres_superuser_url: str, tmp_path: Path
) -> None:
    environment = production(database, redis_url, tmp_path) | {
        "DATABASE_URL": postgres_superuser_url,
        "LYSS_PUBLIC_URL": "http://lyss.example.com",
        "LYSS_LOG_LEVEL": "debug",
        "LYSS_TRUSTED_PROXIES": "0.0.0.0/0",
        "LYSS_STORAGE_BACKEND": "s3",
        "LYSS_S3_BUCKET": "lyss",
        "LYSS_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "LYSS_S3_SECRET_ACCESS_KEY": "do-not-print-me",
        "LYSS_S3_ACCESS_KEY_ID": "key-id",
    }
    code, output = doctor(environment)
    assert code == 1
    unsafe = [line for line in output.splitlines() if line.startswith("unsafe")]
    assert len(unsafe) == 5, output
    for expected in ("no TLS in front", "debug", "forge its own IP", "bypasses row-level security", "127.0.0.1:9"):
        assert any(expected in line for line in unsafe), expected
    assert "5 unsafe setting(s)" in output
    assert "do-not-print-me" not in output


def test_a_setting_lyss_does_not_read_fails_the_check_naming_the_one_it_does(
    database: DatabaseUrls, redis_url: str, tmp_path: Path
) -> None:
    code, output = doctor(production(database, redis_url, tmp_path) | {"LYSS_DATABASE_POOL_SIZE": "10"})
    assert code == 1
    unsafe = [line for line in output.splitlines() if line.startswith("unsafe")]
    assert unsafe == [
        "unsafe   settings  LYSS_DATABASE_POOL_SIZE is not a setting Lyss reads; did you mean DATABASE_POOL_SIZE?"
    ]


def test_doctor_warns_while_no_worker_writes_usage(database: DatabaseUrls, redis_url: str, tmp_path: Path) -> None:
    # A database of the suite's Redis that no flusher heartbeats in (the suite's own flusher uses database 0).
    quiet = f"{redis_url}?db=7"
    client = redis.Redis.from_url(quiet)
    client.flushdb()
    try:
        code, output = doctor(production(database, redis_url, tmp_path) | {"REDIS_URL": quiet})
        assert code == 0, output  # a warning: the worker may simply not be started yet
        assert "warning  usage     usage is not being written: no lyss worker seen in the last 30 s" in output
        client.set(HEARTBEAT_KEY, "worker-1", ex=HEARTBEAT_SECONDS)  # what a worker's flusher pass leaves
        code, output = doctor(production(database, redis_url, tmp_path) | {"REDIS_URL": quiet})
        assert code == 0, output
        assert "ok       usage     a lyss worker writes the usage log" in output
        assert "not being written" not in output
    finally:
        client.flushdb()
        client.close()
