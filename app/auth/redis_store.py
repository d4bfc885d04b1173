"""Short-lived auth state in Redis: sign-in rate limits, MFA ticket use, OAuth states, revoked sessions."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

_PREFIX = "lyss:auth"
# Count a hit in a fixed window; the window starts with the first hit. Returns {count, seconds left}.
_COUNT_IN_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


class AuthStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._count_in_window = redis.register_script(_COUNT_IN_WINDOW)

    async def _count(self, key: str, window_seconds: int) -> tuple[int, int]:
        count, seconds_left = await self._count_in_window(keys=[key], args=[window_seconds])
        return int(count), int(seconds_left)

    async def sign_in_attempt_from(self, ip: str, limit_per_minute: int) -> int | None:
        """Count a sign-in attempt from `ip`; over the limit, return the seconds to wait."""
        count, seconds_left = await self._count(f"{_PREFIX}:ip:{ip}", 60)
        return seconds_left if count > limit_per_minute else None

    # Failures against an email that has no account are counted here, so that an unknown email locks
    # exactly like a real one and the two cannot be told apart.
    def _unknown_account_key(self, tenant_id: UUID, email: str) -> str:
        return f"{_PREFIX}:unknown:{tenant_id}:{hashlib.sha256(email.encode()).hexdigest()}"

    async def unknown_account_lock(self, tenant_id: UUID, email: str, max_failures: int) -> int | None:
        key = self._unknown_account_key(tenant_id, email)
        count = await self._redis.get(key)
        if count is None or int(count) < max_failures:
            return None
        return max(int(await self._redis.ttl(key)), 1)

    async def unknown_account_failed(self, tenant_id: UUID, email: str, lockout_seconds: int) -> None:
        await self._count(self._unknown_account_key(tenant_id, email), lockout_seconds)

    async def mfa_ticket_failed(self, ticket_id: str, ttl_seconds: int) -> int:
        count, _ = await self._count(f"{_PREFIX}:mfa-ticket:{ticket_id}:failures", ttl_seconds)
        return count

    async def claim_mfa_ticket(self, ticket_id: str, ttl_seconds: int) -> bool:
        """True the first time only: a ticket is exchanged for one session at most."""
        return bool(await self._redis.set(f"{_PREFIX}:mfa-ticket:{ticket_id}:used", 1, nx=True, ex=ttl_seconds))

    async def revoke_session(self, session_id: UUID, ttl_seconds: int) -> None:
        """Access tokens of this login stop working now, not when they expire."""
        await self._redis.set(f"{_PREFIX}:revoked:{session_id}", 1, ex=ttl_seconds)

    async def session_revoked(self, session_id: UUID) -> bool:
        return bool(await self._redis.exists(f"{_PREFIX}:revoked:{session_id}"))

    async def save_oauth_state(self, state: str, data: dict[str, Any], ttl_seconds: int) -> None:
        await self._redis.set(f"{_PREFIX}:oauth-state:{state}", json.dumps(data), ex=ttl_seconds)

    async def take_oauth_state(self, state: str) -> dict[str, Any] | None:
        """The state's data, once: a second callback with the same state finds nothing."""
        raw = await self._redis.getdel(f"{_PREFIX}:oauth-state:{state}")
        return None if raw is None else dict(json.loads(raw))

    async def save_sign_in_refusal(self, message: str, ttl_seconds: int = 300) -> str:
        """Keep why a browser's sign-in was refused for the page it is sent to; the key names it in the address."""
        key = secrets.token_urlsafe(16)
        await self._redis.set(f"{_PREFIX}:sign-in-refusal:{key}", message, ex=ttl_seconds)
        return key

    async def take_sign_in_refusal(self, key: str) -> str | None:
        """The message, once: the address carries only the key, so no text of a link's choosing is ever shown."""
        raw = await self._redis.getdel(f"{_PREFIX}:sign-in-refusal:{key}")
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)
