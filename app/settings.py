"""Typed settings read from the environment (and an optional `.env`), validated once at start-up."""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import secrets
import time
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from croniter import croniter
from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SECRETS_FILE_NAME = "secrets.env"
MIN_SECRET_KEY_BYTES = 32
# Where programs reach Lyss unless LYSS_PUBLIC_URL says otherwise: the default LYSS_HOST and LYSS_PORT.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
# REDIS_URL of a Redis Cluster: redis+cluster://[user:password@]host:port[,host:port...] (any of its nodes).
REDIS_CLUSTER_SCHEME = "redis+cluster://"

# Field name -> environment variable. The struct is renamed with this map so that msgspec's own
# validation errors already name the variable the operator has to fix.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "data_dir": "LYSS_DATA_DIR",
    "host": "LYSS_HOST",
    "port": "LYSS_PORT",
    "workers": "LYSS_WORKERS",
    "database_url": "DATABASE_URL",
    "database_owner_url": "DATABASE_OWNER_URL",
    "database_pool_size": "DATABASE_POOL_SIZE",
    "redis_url": "REDIS_URL",
    "redis_cluster_nodes": "LYSS_REDIS_CLUSTER_NODES",
    "encryption_keys": "LYSS_ENCRYPTION_KEYS",
    "jwt_keys": "LYSS_JWT_KEYS",
    "public_url": "LYSS_PUBLIC_URL",
    "trusted_proxies": "LYSS_TRUSTED_PROXIES",
    "access_token_ttl_seconds": "LYSS_ACCESS_TOKEN_TTL",
    "refresh_token_ttl_seconds": "LYSS_REFRESH_TOKEN_TTL",
    "portal_session_ttl_seconds": "LYSS_PORTAL_SESSION_TTL",
    "login_max_failures": "LYSS_LOGIN_MAX_FAILURES",
    "login_lockout_seconds": "LYSS_LOGIN_LOCKOUT_SECONDS",
    "login_ip_limit_per_minute": "LYSS_LOGIN_IP_LIMIT_PER_MINUTE",
    "max_request_body_bytes": "LYSS_MAX_REQUEST_BODY_BYTES",
    "kb_max_upload_bytes": "LYSS_KB_MAX_UPLOAD_BYTES",
    "knowledge_url_allow_private": "LYSS_KNOWLEDGE_URL_ALLOW_PRIVATE",
    "knowledge_url_connect_timeout_seconds": "LYSS_KNOWLEDGE_URL_CONNECT_TIMEOUT",
    "knowledge_url_timeout_seconds": "LYSS_KNOWLEDGE_URL_TIMEOUT",
    "echo_provider": "LYSS_ECHO_PROVIDER",
    "gateway_max_attempts": "LYSS_GATEWAY_MAX_ATTEMPTS",
    "gateway_default_max_tokens": "LYSS_GATEWAY_DEFAULT_MAX_TOKENS",
    "upstream_connect_timeout_seconds": "LYSS_UPSTREAM_CONNECT_TIMEOUT",
    "upstream_read_timeout_seconds": "LYSS_UPSTREAM_READ_TIMEOUT",
    "channel_cooldown_seconds": "LYSS_CHANNEL_COOLDOWN_SECONDS",
    "gateway_cache_seconds": "LYSS_GATEWAY_CACHE_SECONDS",
    "gateway_lease_seconds": "LYSS_GATEWAY_LEASE_SECONDS",
    "gateway_queue_limit": "LYSS_GATEWAY_QUEUE_LIMIT",
    "gateway_queue_seconds": "LYSS_GATEWAY_QUEUE_SECONDS",
    "gateway_rerank_max_documents": "LYSS_GATEWAY_RERANK_MAX_DOCUMENTS",
    "worker_concurrency": "LYSS_WORKER_CONCURRENCY",
    "job_max_attempts": "LYSS_JOB_MAX_ATTEMPTS",
    "job_retry_delay_seconds": "LYSS_JOB_RETRY_DELAY_SECONDS",
    "job_retry_max_delay_seconds": "LYSS_JOB_RETRY_MAX_DELAY_SECONDS",
    "job_heartbeat_seconds": "LYSS_JOB_HEARTBEAT_SECONDS",
    "webhook_retry_seconds": "LYSS_WEBHOOK_RETRY_SECONDS",
    "worker_shutdown_grace_seconds": "LYSS_WORKER_SHUTDOWN_GRACE_SECONDS",
    "embedded_worker": "LYSS_EMBEDDED_WORKER",
    "job_sweep_seconds": "LYSS_JOB_SWEEP_SECONDS",
    "chat_summary_every_messages": "LYSS_CHAT_SUMMARY_EVERY_MESSAGES",
    "chat_knowledge_tokens": "LYSS_CHAT_KNOWLEDGE_TOKENS",
    "export_ttl_hours": "LYSS_EXPORT_TTL_HOURS",
    "usage_retention_months": "LYSS_USAGE_RETENTION_MONTHS",
    "backup_cron": "LYSS_BACKUP_CRON",
    "backup_keep": "LYSS_BACKUP_KEEP",
    "backup_database_url": "LYSS_BACKUP_DATABASE_URL",
    "otel_enabled": "LYSS_OTEL_ENABLED",
    "storage_backend": "LYSS_STORAGE_BACKEND",
    "storage_dir": "LYSS_STORAGE_DIR",
    "storage_url_ttl_seconds": "LYSS_STORAGE_URL_TTL_SECONDS",
    "s3_bucket": "LYSS_S3_BUCKET",
    "s3_endpoint_url": "LYSS_S3_ENDPOINT_URL",
    "s3_region": "LYSS_S3_REGION",
    "s3_access_key_id": "LYSS_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "LYSS_S3_SECRET_ACCESS_KEY",
    "job_modules": "LYSS_JOB_MODULES",
    "log_level": "LYSS_LOG_LEVEL",
    "log_format": "LYSS_LOG_FORMAT",
}

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ConfigurationError(Exception):
    """A setting is missing or invalid; the message names the environment variable to fix."""


class SecretKey(msgspec.Struct, frozen=True):
    """One symmetric key with the id that is stored next to everything it protects."""

    key_id: str
    secret: bytes


class KeyRing(msgspec.Struct, frozen=True):
    """Keys for one purpose: the first signs or encrypts, all of them are accepted when reading."""

    keys: tuple[SecretKey, ...]

    @property
    def current(self) -> SecretKey:
        return self.keys[0]

    def find(self, key_id: str) -> SecretKey | None:
        return next((key for key in self.keys if key.key_id == key_id), None)


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=ENVIRONMENT_VARIABLES):
    """Everything Lyss reads from its environment. Build it with `load_settings`, or directly in tests."""

    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    database_url: str | None = None
    database_owner_url: str | None = None
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    redis_url: str | None = None
    # host:port,host:port: another way of writing REDIS_URL=redis+cluster://host:port,host:port.
    redis_cluster_nodes: str | None = None
    encryption_keys: str | None = None
    jwt_keys: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    trusted_proxies: str = ""
    access_token_ttl_seconds: Annotated[int, msgspec.Meta(ge=30, le=86400)] = 900
    refresh_token_ttl_seconds: Annotated[int, msgspec.Meta(ge=300)] = 30 * 86400
    portal_session_ttl_seconds: Annotated[int, msgspec.Meta(ge=300)] = 12 * 3600
    login_max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    login_lockout_seconds: Annotated[int, msgspec.Meta(ge=1)] = 900
    login_ip_limit_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 30
    max_request_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 10 * 1024 * 1024
    # The largest file a knowledge base takes (its upload route alone has this body limit, not the one above).
    kb_max_upload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 20 * 1024 * 1024
    # Documents fetched from a URL a tenant allows (app/knowledge/fetch.py): whether a host may resolve to a
    # loopback, private or otherwise non-public address (for tests and closed networks only: it opens the
    # network Lyss runs in to whoever may add documents), and how long connecting and the whole fetch may take.
    knowledge_url_allow_private: bool = False
    knowledge_url_connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    knowledge_url_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # None: on with the embedded database (a laptop trying Lyss out), off otherwise.
    echo_provider: bool | None = None
    gateway_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    gateway_default_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
    upstream_connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    upstream_read_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    channel_cooldown_seconds: Annotated[int, msgspec.Meta(ge=1)] = 30
    gateway_cache_seconds: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # A slot of a concurrency limit is a lease: a process that dies holding one frees it after this long.
    gateway_lease_seconds: Annotated[int, msgspec.Meta(ge=2, le=3600)] = 30
    # Calls that may wait for a slot of one full channel, and for how long, before failover or a 429.
    gateway_queue_limit: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    gateway_queue_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 10.0
    # Documents one /v1/rerank call may rank (Cohere's own limit is 1,000 a call).
    gateway_rerank_max_documents: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    worker_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    job_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    job_retry_delay_seconds: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    job_retry_max_delay_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    job_heartbeat_seconds: Annotated[int, msgspec.Meta(ge=1)] = 30
    # The first wait before a failed webhook delivery is tried again; each next wait doubles (up to 60 times it).
    webhook_retry_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    worker_shutdown_grace_seconds: Annotated[int, msgspec.Meta(ge=0)] = 10
    # `lyss serve` also runs a job worker in its own process; on by default with the embedded servers.
    embedded_worker: bool | None = None
    job_sweep_seconds: Annotated[int, msgspec.Meta(ge=1)] = 10
    # A conversation is summarised each time this many messages followed its last summary.
    chat_summary_every_messages: Annotated[int, msgspec.Meta(ge=4)] = 40
    # How many tokens of a chat turn's context the sources from its knowledge bases may take.
    chat_knowledge_tokens: Annotated[int, msgspec.Meta(ge=100, le=100_000)] = 3000
    export_ttl_hours: Annotated[int, msgspec.Meta(ge=1)] = 24
    # Whole months of the usage log kept before this one; older monthly partitions are dropped by `lyss migrate`
    # (0: kept forever).
    usage_retention_months: Annotated[int, msgspec.Meta(ge=0, le=1200)] = 13
    # The worker's scheduled backup: when (cron, UTC; empty: never), how many of its archives to keep, and the
    # role pg_dump connects as (one that bypasses row-level security; without it nothing is scheduled).
    backup_cron: str = "17 3 * * *"
    backup_keep: Annotated[int, msgspec.Meta(ge=1)] = 7
    backup_database_url: str | None = None
    # Traces over OTLP/HTTP, configured by the standard OTEL_* variables (endpoint, headers, service name).
    otel_enabled: bool = False
    # Files that outlive a request (exports): a directory every API replica and worker sees, or S3.
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None
    storage_url_ttl_seconds: Annotated[int, msgspec.Meta(ge=10, le=86400)] = 300
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # Extra modules whose job handlers the worker registers (comma-separated), for extensions.
    job_modules: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def storage_path(self) -> Path:
        return self.storage_dir or self.data_dir / "objects"

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / SECRETS_FILE_NAME

    @property
    def echo_provider_enabled(self) -> bool:
        return self.embedded_database if self.echo_provider is None else self.echo_provider

    @property
    def embedded_worker_enabled(self) -> bool:
        return self.embedded_database if self.embedded_worker is None else self.embedded_worker

    @property
    def cookies_secure(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return parse_networks(self.trusted_proxies, "LYSS_TRUSTED_PROXIES")

    @property
    def encryption_keyring(self) -> KeyRing:
        return _require_keyring(self.encryption_keys, "encryption_keys")

    @property
    def jwt_keyring(self) -> KeyRing:
        return _require_keyring(self.jwt_keys, "jwt_keys")


def _require_keyring(raw: str | None, field: str) -> KeyRing:
    variable = ENVIRONMENT_VARIABLES[field]
    if raw is None:
        raise ConfigurationError(f"{variable} is not set")
    return parse_keyring(raw, variable)


def parse_networks(raw: str, variable: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Parse a comma-separated list of addresses or CIDR networks."""
    try:
        return tuple(ip_network(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError as error:
        raise ConfigurationError(f"{variable}: {error}; expected addresses or networks like 10.0.0.0/8") from None


def parse_keyring(raw: str, variable: str) -> KeyRing:
    """Parse `kid:base64key[,kid:base64key...]`; the first key is the current one."""
    keys: list[SecretKey] = []
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        key_id, separator, encoded = entry.partition(":")
        if not separator or not _KEY_ID.match(key_id):
            raise ConfigurationError(
                f"{variable}: each entry must look like 'key_id:base64secret' (key_id of letters, digits, '_' or '-')"
            )
        try:
            secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{variable}: the secret of key '{key_id}' is not valid base64") from None
        if len(secret) < MIN_SECRET_KEY_BYTES:
            raise ConfigurationError(
                f"{variable}: the secret of key '{key_id}' must be at least {MIN_SECRET_KEY_BYTES} bytes"
            )
        if any(existing.key_id == key_id for existing in keys):
            raise ConfigurationError(f"{variable}: key id '{key_id}' appears twice")
        keys.append(SecretKey(key_id=key_id, secret=secret))
    if not keys:
        raise ConfigurationError(f"{variable}: no keys given")
    return KeyRing(keys=tuple(keys))


def new_key_entry() -> str:
    """A fresh `kid:base64key` entry (32 random bytes) for LYSS_ENCRYPTION_KEYS or LYSS_JWT_KEYS."""
    key_id = f"k{time.strftime('%Y%m%d')}{secrets.token_hex(2)}"
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"


def read_environment(environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> dict[str, str]:
    """The process environment over an optional `.env` file (the environment wins)."""
    merged: dict[str, str] = {}
    dotenv_file = dotenv_path if dotenv_path is not None else Path(".env")
    if dotenv_file.is_file():
        merged.update({key: value for key, value in dotenv_values(dotenv_file).items() if value is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


# Settings for which an empty value is a choice (off), not "unset, take the default".
EMPTY_MEANS_OFF = frozenset({"LYSS_BACKUP_CRON"})

# Read by docker-compose and the database's init script (deploy/), never by Lyss: a shared `.env` holds them.
DEPLOYMENT_VARIABLES = frozenset({"LYSS_OWNER_PASSWORD", "LYSS_APP_PASSWORD", "LYSS_HTTP_PORT", "LYSS_S3_PORT"})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with each `LYSS_*` variable that is set but that Lyss does not read, naming the closest
    variable it does read: a misspelt setting would otherwise be ignored without a word."""
    known = set(ENVIRONMENT_VARIABLES.values())
    # Compared without the prefix, which every name shares and which would make any two look alike.
    by_stem = {name.removeprefix("LYSS_"): name for name in known}
    problems = []
    for name in sorted(read_environment(environ)):
        if not name.startswith("LYSS_") or name in known or name in DEPLOYMENT_VARIABLES:
            continue
        close = difflib.get_close_matches(name.removeprefix("LYSS_"), list(by_stem), n=1, cutoff=0.75)
        hint = f"; did you mean {by_stem[close[0]]}?" if close else "; see README.md, Configuration"
        problems.append(f"{name} is not a setting Lyss reads{hint}")
    return problems


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the environment into `Settings`, or raise `ConfigurationError` naming the bad variable.

    Without `DATABASE_URL` Lyss runs embedded and takes its keys from `<data_dir>/secrets.env` when
    they are not in the environment; with it, the keys must be given explicitly.
    """
    values = {
        name: value
        for name, value in read_environment(environ).items()
        if name in ENVIRONMENT_VARIABLES.values() and (value != "" or name in EMPTY_MEANS_OFF)
    }
    settings = _with_cluster_nodes(_convert(values))
    if settings.embedded_database:
        secrets = dotenv_values(settings.secrets_file) if settings.secrets_file.is_file() else {}
        for field in ("encryption_keys", "jwt_keys"):
            variable = ENVIRONMENT_VARIABLES[field]
            stored = secrets.get(variable)
            if variable not in values and stored:
                values[variable] = stored
        settings = _with_cluster_nodes(_convert(values))
    else:
        for field in ("encryption_keys", "jwt_keys"):
            if getattr(settings, field) is None:
                raise ConfigurationError(
                    f"{ENVIRONMENT_VARIABLES[field]} is required when DATABASE_URL is set "
                    "(only the embedded mode generates keys); see README.md, Configuration"
                )
    validate_settings(settings)
    return settings


def _with_cluster_nodes(settings: Settings) -> Settings:
    """LYSS_REDIS_CLUSTER_NODES folded into REDIS_URL, so that the rest of Lyss reads one setting."""
    if settings.redis_cluster_nodes is None:
        return settings
    if settings.redis_url is not None:
        raise ConfigurationError("LYSS_REDIS_CLUSTER_NODES and REDIS_URL are both set: give the cluster in one of them")
    return msgspec.structs.replace(
        settings, redis_url=REDIS_CLUSTER_SCHEME + settings.redis_cluster_nodes.strip(), redis_cluster_nodes=None
    )


def validate_settings(settings: Settings) -> None:
    """Checks that need more than a type: URL shapes and key formats."""
    if settings.database_url is not None:
        database_url(settings.database_url, "DATABASE_URL")
    if settings.database_owner_url is not None:
        database_url(settings.database_owner_url, "DATABASE_OWNER_URL")
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://", REDIS_CLUSTER_SCHEME)
    ):
        raise ConfigurationError(f"REDIS_URL: must start with redis://, rediss://, unix:// or {REDIS_CLUSTER_SCHEME}")
    if settings.redis_url is not None and settings.redis_url.startswith(REDIS_CLUSTER_SCHEME):
        cluster_nodes(settings.redis_url)
    for field in ("encryption_keys", "jwt_keys"):
        raw = getattr(settings, field)
        if raw is not None:
            parse_keyring(raw, ENVIRONMENT_VARIABLES[field])
    if not settings.public_url.startswith(("http://", "https://")) or settings.public_url.endswith("/"):
        raise ConfigurationError("LYSS_PUBLIC_URL: expected the external base URL, e.g. https://lyss.example.com")
    parse_networks(settings.trusted_proxies, "LYSS_TRUSTED_PROXIES")
    if settings.backup_cron and not croniter.is_valid(settings.backup_cron):
        raise ConfigurationError("LYSS_BACKUP_CRON: not a cron schedule; expected e.g. '17 3 * * *', or empty for none")


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The seed nodes of `redis+cluster://[user:password@]host:port[,host:port...]`."""
    rest = url[len(REDIS_CLUSTER_SCHEME) :]
    hosts = rest.rpartition("@")[2]
    hosts = hosts.split("/", 1)[0]
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigurationError(
                f"REDIS_URL: '{item.strip()}' is not host:port in {REDIS_CLUSTER_SCHEME}host:port,..."
            )
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def database_url(raw: str, variable: str) -> URL:
    """Parse a PostgreSQL URL and point it at the asyncpg driver."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigurationError(f"{variable}: not a URL; expected postgresql://user:password@host/db") from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{variable}: expected a postgresql:// URL, got {url.drivername}://")
    if not url.database:
        raise ConfigurationError(f"{variable}: the URL names no database")
    return url.set(drivername="postgresql+asyncpg")


def _convert(values: Mapping[str, str]) -> Settings:
    try:
        return msgspec.convert(values, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as error:
        raise ConfigurationError(_describe(error)) from None


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def _describe(error: msgspec.ValidationError) -> str:
    message, _, location = str(error).partition(" - at `$.")
    variable = location.rstrip("`")
    return f"{variable}: {message}" if variable else message


def settings_environment(settings: Settings) -> dict[str, str]:
    """Resolved settings as environment variables, for child processes (workers) to load the same."""
    # (to_builtins applies the struct's renaming, so the keys are the variable names.)
    environment: dict[str, Any] = msgspec.to_builtins(settings, enc_hook=str)
    return {variable: str(value) for variable, value in environment.items() if value is not None}
