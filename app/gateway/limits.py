"""Quotas and rate limits in Redis: one script reserves, one settles; nothing can overspend.

Every key a script touches carries the tenant as a hash tag (`lyss:gw:{<tenant>}:...`), so each script
stays on one slot and also runs on Redis Cluster.

A call is bounded by several spending scopes at once: its key, its user, each of the user's groups and the
organization. Each scope has a balance (credits used) and may have a quota and RPM/TPM limits.

- reserve: checks every scope's RPM and TPM, then every scope's remaining credit, and which candidate
  channels are usable (not cooling down, under their rate limit and quota); then takes the worst-case
  cost from every balance. All or nothing, in one round trip. A refusal names the scope, and for a quota
  the least credit any scope has left (what a smaller call could still spend).
- settle: replaces the reservation with the real cost (never more than reserved) in every scope and
  appends the usage record to the tenant's usage stream in the same step, so counters and the log cannot
  disagree.
- record: appends the record of a call that reserved nothing (refused) to the same stream.

Concurrency limits (a key's or user's requests and streams in flight, a channel's calls in flight) are
leases: a sorted set per scope of lease id → expiry, expired members removed before counting, so a process
that dies holding a slot frees it within the lease time. The reservation takes the key's and user's slots
(in the same round trip), the settlement gives them back; a channel's slot is taken when the channel is
chosen (`take_channel_slot`, with a bounded list of waiters per channel). A call without any such limit
sends no extra key and pays no extra round trip.

A balance in Redis is PostgreSQL's `used_quota` plus what is settled but not yet flushed plus what is
reserved by calls in flight: never less than PostgreSQL's. The scheduled budget task keeps it so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from uuid import UUID

import msgspec
from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterDownError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redis_client import as_cluster

USAGE_TENANTS_KEY = "lyss:gw:usage-tenants"
# On a cluster: how long a settlement is sent again while its master fails over (the cluster node timeout plus
# the election take a few seconds), and how long its marker outlives it.
SETTLE_RETRY_SECONDS = 30
SETTLE_RETRY_PAUSE_SECONDS = 0.25
SETTLED_MARKER_TTL_SECONDS = 600
MINUTE_KEY_TTL_SECONDS = 120

# KEYS: per scope (used, rpm, tpm), then per channel (cool, rpm, used), then per concurrency slot its lease set.
# ARGV: scopes, channels, cost, token estimate, minute-key TTL, per scope (quota, rpm, tpm), per channel
# (rate limit, quota), then slots, lease id, now (ms), lease expiry (ms), lease-set TTL, per slot its limit.
_RESERVE = """
local scopes, channels = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, estimate, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local slot_keys, slot_args = scopes * 3 + channels * 3, 5 + scopes * 3 + channels * 2
local slots = tonumber(ARGV[slot_args + 1] or '0')
local used = {}
for i = 1, scopes do
    local value = redis.call('GET', KEYS[i * 3 - 2])
    if not value then return {-1, 'missing', i - 1, 0} end
    used[i] = tonumber(value)
end
for i = 1, slots do
    local key = KEYS[slot_keys + i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[slot_args + 3])
    if redis.call('ZCARD', key) >= tonumber(ARGV[slot_args + 5 + i]) then return {0, 'concurrency', i - 1, 0} end
end
for i = 1, scopes do
    local rpm, tpm = tonumber(ARGV[4 + i * 3]), tonumber(ARGV[5 + i * 3])
    if rpm > 0 and tonumber(redis.call('GET', KEYS[i * 3 - 1]) or '0') + 1 > rpm then return {0, 'rpm', i - 1, 0} end
    if tpm > 0 and tonumber(redis.call('GET', KEYS[i * 3]) or '0') + estimate > tpm then return {0, 'tpm', i - 1, 0} end
end
local short, tightest, least = false, -1, -1
for i = 1, scopes do
    local quota = tonumber(ARGV[3 + i * 3])
    if quota >= 0 then
        local left = math.max(quota - used[i], 0)
        if least < 0 or left < least then least, tightest = left, i - 1 end
        if used[i] + cost > quota then short = true end
    end
end
if short then return {0, 'quota', tightest, least} end
local result = {1, 'ok', 0, 0}
local usable = 0
local key_base, arg_base = scopes * 3, 5 + scopes * 3
for i = 0, channels - 1 do
    local ok = redis.call('EXISTS', KEYS[key_base + 1 + i * 3]) == 0
    local rate_limit, quota = tonumber(ARGV[arg_base + 1 + i * 2]), tonumber(ARGV[arg_base + 2 + i * 2])
    if ok and rate_limit > 0 and tonumber(redis.call('GET', KEYS[key_base + 2 + i * 3]) or '0') >= rate_limit then
        ok = false
    end
    if ok and quota >= 0 and tonumber(redis.call('GET', KEYS[key_base + 3 + i * 3]) or '0') >= quota then ok = false end
    if ok then usable = usable + 1 end
    result[5 + i] = ok and 1 or 0
end
if usable == 0 then return {0, 'no_channel', 0, 0} end
for i = 1, scopes do
    redis.call('INCRBY', KEYS[i * 3 - 2], cost)
    if tonumber(ARGV[4 + i * 3]) > 0 then
        redis.call('INCR', KEYS[i * 3 - 1])
        redis.call('EXPIRE', KEYS[i * 3 - 1], ttl)
    end
    if tonumber(ARGV[5 + i * 3]) > 0 then
        redis.call('INCRBY', KEYS[i * 3], estimate)
        redis.call('EXPIRE', KEYS[i * 3], ttl)
    end
end
for i = 1, slots do
    redis.call('ZADD', KEYS[slot_keys + i], ARGV[slot_args + 4], ARGV[slot_args + 2])
    redis.call('EXPIRE', KEYS[slot_keys + i], ARGV[slot_args + 5])
end
return result
"""

# KEYS: per scope (used, tpm of the reservation's minute), channel used, channel rpm, usage stream, then (on a
# cluster) the call's settlement marker, then the lease sets the call holds a slot in.
# ARGV: scopes, reserved, cost, token delta, '1' if a channel answered, record, minute-key TTL, lease id,
# '1' if a settlement marker is given, its TTL.
# With a marker a settlement is applied once however often it is sent: it is sent again after a failover.
_SETTLE = """
local scopes = tonumber(ARGV[1])
local base = scopes * 2
local marked = ARGV[9] == '1'
if marked and not redis.call('SET', KEYS[base + 4], 1, 'NX', 'EX', ARGV[10]) then return 0 end
local refund = tonumber(ARGV[2]) - tonumber(ARGV[3])
local tokens_delta = tonumber(ARGV[4])
for i = 1, scopes do
    if refund ~= 0 then redis.call('DECRBY', KEYS[i * 2 - 1], refund) end
    if tokens_delta ~= 0 and redis.call('EXISTS', KEYS[i * 2]) == 1 then
        redis.call('INCRBY', KEYS[i * 2], tokens_delta)
    end
end
if ARGV[5] == '1' then
    redis.call('INCRBY', KEYS[base + 1], tonumber(ARGV[3]))
    redis.call('INCR', KEYS[base + 2])
    redis.call('EXPIRE', KEYS[base + 2], ARGV[7])
end
for i = base + (marked and 5 or 4), #KEYS do redis.call('ZREM', KEYS[i], ARGV[8]) end
redis.call('XADD', KEYS[base + 3], '*', 'record', ARGV[6])
return redis.call('XLEN', KEYS[base + 3])
"""

# KEYS: a channel's lease set, its waiters. ARGV: limit, lease id, now (ms), lease expiry (ms), set TTL,
# '1' to wait (join the waiters if full), most waiters, waiter's expiry (ms).
# Returns 1 (slot taken), 0 (full; waiting if asked), -1 (full and no room to wait).
_TAKE_CHANNEL_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    redis.call('ZREM', KEYS[2], ARGV[2])
    return 1
end
if ARGV[6] ~= '1' then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then return -1 end
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 0
"""

# KEYS: lease sets. ARGV: lease id.
_RELEASE = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return #KEYS
"""

# KEYS: lease sets. ARGV: lease id, new expiry (ms). Only a lease still held is extended.
_RENEW = """
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', ARGV[2], ARGV[1]) end
return #KEYS
"""

_RECORD = """
redis.call('XADD', KEYS[1], '*', 'record', ARGV[1])
return redis.call('XLEN', KEYS[1])
"""


class Scope(msgspec.Struct, frozen=True):
    """One bound on a call's spending: `key` names its counters (`token:<id>`, `user:<id>`, `group:<id>`,
    `tenant`); quota in credits (-1: none); RPM and TPM limits (0: none)."""

    key: str
    quota: int = -1
    rpm_limit: int = 0
    tpm_limit: int = 0


class Slot(msgspec.Struct, frozen=True):
    """A concurrency limit a call takes a slot of: `key` names its lease set (`token:<id>:inflight`,
    `user:<id>:streams`); `limit` is how many may be held at once."""

    key: str
    limit: int


class Refusal(msgspec.Struct, frozen=True):
    reason: str  # rpm, tpm, quota, no_channel, concurrency
    retry_after: int
    # The scope that refused (its index in the reserved scopes); for a quota, the one with the least left.
    scope: int = 0
    # For a quota: the least credit any scope has left.
    left: int = 0


class Reservation(msgspec.Struct, frozen=True):
    cost: int
    tokens: int
    minute: int
    usable: tuple[bool, ...]
    scopes: tuple[str, ...]
    # The call's lease id and the lease sets it holds a slot in (empty: no concurrency limit applies).
    lease: str = ""
    slots: tuple[str, ...] = ()


# A budget period ends: take what PostgreSQL counted in it off the balance; what was settled or reserved
# since stays. Without a balance, start one at zero so that a stale load from PostgreSQL cannot win.
_RESET_USED = """
local current = redis.call('GET', KEYS[1])
if not current then redis.call('SET', KEYS[1], 0) return 0 end
local remaining = tonumber(current) - tonumber(ARGV[1])
if remaining < 0 then remaining = 0 end
redis.call('SET', KEYS[1], remaining)
return remaining
"""

# A balance lower than PostgreSQL's count (Redis lost writes) is raised to it; never lowered here.
_RAISE_TO = """
local raised = 0
for i, key in ipairs(KEYS) do
    local current = redis.call('GET', key)
    if current and tonumber(current) < tonumber(ARGV[i]) then
        redis.call('SET', key, ARGV[i])
        raised = raised + 1
    end
end
return raised
"""


def _prefix(tenant_id: UUID) -> str:
    return f"lyss:gw:{{{tenant_id.hex}}}"


def lease_key(tenant_id: UUID, scope: str) -> str:
    """The lease set of a concurrency limit (`token:<id>:inflight`, `channel:<id>:inflight`, ...)."""
    return f"{_prefix(tenant_id)}:{scope}"


def tenant_key(tenant_id: UUID, name: str) -> str:
    """A key of the tenant's own (`lyss:gw:{<tenant>}:<name>`): in its hash slot, never in another tenant's."""
    return f"{_prefix(tenant_id)}:{name}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def usage_stream_key(tenant_id: UUID) -> str:
    return f"{_prefix(tenant_id)}:usage"


class DirectScripts:
    """Runs the hot path's scripts on connections of its own, below redis-py's client layers.

    `Script.__call__` goes through the client's retry, event and pool machinery (the pool checks each
    connection with a zero-timeout read): ~80 µs of CPU a command, against ~40 µs for EVALSHA written and
    read on a connection directly (docs/performance.md). The command is packed by hiredis (redis-py's asyncio
    connection packs in Python, argument by argument: 14% of a call's profile for the ~26 arguments of each
    script) and written without redis-py's `wait_for`, which runs every write in a task of its own.

    A connection serves one call at a time. One that saw an error, or a cancellation halfway through a
    reply, is dropped, never reused; one whose server end has closed while idle (Redis restarted, CLIENT
    KILL) is dropped before use. A command is never sent twice: whether a failed one ran is unknown, and
    reserving or settling twice would be wrong.
    """

    def __init__(self, redis: Redis) -> None:
        self._cluster = as_cluster(redis)
        self.on_cluster = self._cluster is not None
        self._pool = redis.connection_pool if self._cluster is None else None  # for its address and options
        self._idle: list[AbstractConnection] = []

    def _connection(self) -> AbstractConnection:
        while self._idle:
            connection = self._idle.pop()
            reader = connection._reader  # the only way to see an EOF without reading
            if reader is not None and not reader.at_eof():
                return connection
        assert self._pool is not None
        new: AbstractConnection = self._pool.connection_class(**self._pool.connection_kwargs)
        return new

    async def run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        if self._cluster is not None:
            return await self._run_on_cluster(self._cluster, script, keys, args)
        connection = self._connection()
        try:
            try:
                await _send(connection, pack_command(("EVALSHA", script.sha, len(keys), *keys, *args)))
                reply = await connection.read_response()
            except NoScriptError:
                # Redis restarted or its scripts were flushed: the source, once, and it is cached again.
                await _send(connection, pack_command(("EVAL", script.script, len(keys), *keys, *args)))
                reply = await connection.read_response()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        self._idle.append(connection)
        return reply

    @staticmethod
    async def _run_on_cluster(cluster: RedisCluster, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """On the master of the keys' slot (all of one call's keys share the tenant's hash tag). Naming the node
        turns off the client's retries, so the script still runs at most once: a MOVED reply (the slot moved,
        the script did not run) is followed, a lost connection is raised and makes the client learn the
        cluster's new shape before its next command."""
        node = cluster.get_node_from_key(keys[0])
        try:
            return await cluster.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, target_nodes=node)
        except NoScriptError:
            # A new master (after a failover) or a flushed script cache: the source, once.
            return await cluster.execute_command("EVAL", script.script, len(keys), *keys, *args, target_nodes=node)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect(nowait=True)


async def _send(connection: AbstractConnection, packed: bytes) -> None:
    """Write one packed command. The socket takes it at once unless Redis has stopped reading; only then does
    the write wait, and no longer than a read would (`socket_timeout`)."""
    if not connection.is_connected:
        await connection.connect_check_health(check_health=False)
    writer = connection._writer
    assert writer is not None
    try:
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(connection.socket_timeout):
                await writer.drain()
    except TimeoutError:
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as error:
        raise RedisConnectionError(f"Error while writing to socket: {error}") from error


class GatewayLimits:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._direct = DirectScripts(redis)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._record = redis.register_script(_RECORD)
        self._take_channel_slot = redis.register_script(_TAKE_CHANNEL_SLOT)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._reset_used = redis.register_script(_RESET_USED)
        self._raise_to = redis.register_script(_RAISE_TO)

    @staticmethod
    def used_key(tenant_id: UUID, scope: str) -> str:
        """The balance of a scope (`token:<id>`, `user:<id>`, `group:<id>`, `tenant`, `channel:<id>`)."""
        return f"{_prefix(tenant_id)}:{scope}:used"

    @classmethod
    def token_used_key(cls, tenant_id: UUID, token_id: UUID) -> str:
        return cls.used_key(tenant_id, f"token:{token_id}")

    @classmethod
    def tenant_used_key(cls, tenant_id: UUID) -> str:
        return cls.used_key(tenant_id, "tenant")

    @classmethod
    def channel_used_key(cls, tenant_id: UUID, channel_id: UUID) -> str:
        return cls.used_key(tenant_id, f"channel:{channel_id}")

    async def reserve(
        self,
        *,
        tenant_id: UUID,
        scopes: list[Scope],
        cost: int,
        tokens: int,
        channels: list[tuple[UUID, int, int]],
        slots: list[Slot] | None = None,
        lease: str = "",
        lease_seconds: int = 30,
    ) -> Reservation | Refusal | None:
        """Reserve in every scope and take a slot of every concurrency limit (`slots`, held under `lease` for
        `lease_seconds`), or say why not. None: a balance is not in Redis yet (load, then retry)."""
        minute = int(time.time() // 60)
        prefix = _prefix(tenant_id)
        keys: list[Any] = []
        args: list[Any] = [len(scopes), len(channels), cost, tokens, MINUTE_KEY_TTL_SECONDS]
        for scope in scopes:
            keys += [
                f"{prefix}:{scope.key}:used",
                f"{prefix}:{scope.key}:rpm:{minute}",
                f"{prefix}:{scope.key}:tpm:{minute}",
            ]
            args += [scope.quota, scope.rpm_limit, scope.tpm_limit]
        for channel_id, rate_limit, quota in channels:
            keys += [
                f"{prefix}:channel:{channel_id}:cool",
                f"{prefix}:channel:{channel_id}:rpm:{minute}",
                self.channel_used_key(tenant_id, channel_id),
            ]
            args += [rate_limit, quota]
        slot_keys = tuple(lease_key(tenant_id, slot.key) for slot in slots or ())
        if slot_keys:
            now = _now_ms()
            keys += slot_keys
            args += [len(slot_keys), lease, now, now + lease_seconds * 1000, lease_seconds * 2]
            args += [slot.limit for slot in slots or ()]
        result = await self._direct.run(self._reserve, keys, args)
        status, reason = int(result[0]), result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        if status == -1:
            return None
        if status == 0:
            retry_after = 60 - int(time.time()) % 60 if reason in ("rpm", "tpm") else 0
            return Refusal(reason=reason, retry_after=retry_after, scope=int(result[2]), left=int(result[3]))
        return Reservation(
            cost=cost,
            tokens=tokens,
            minute=minute,
            usable=tuple(bool(flag) for flag in result[4:]),
            scopes=tuple(scope.key for scope in scopes),
            lease=lease,
            slots=slot_keys,
        )

    async def load_balances(self, tenant_id: UUID, balances: dict[str, int]) -> None:
        """Seed the scopes' balances from PostgreSQL (the source of truth) where Redis has none (a restart)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, used in balances.items():
                pipe.set(self.used_key(tenant_id, scope), used, nx=True)
            await pipe.execute()

    async def settle(
        self,
        *,
        tenant_id: UUID,
        reservation: Reservation,
        cost: int,
        tokens: int,
        channel_id: UUID | None,
        record: bytes,
        release: tuple[str, ...] = (),
    ) -> None:
        """Settle, and give back the reservation's slots and those in `release` (lease sets)."""
        prefix = _prefix(tenant_id)
        channel_key = channel_id or UUID(int=0)
        marker = [f"{prefix}:settled:{uuid.uuid4().hex}"] if self._direct.on_cluster else []
        keys: list[Any] = []
        for scope in reservation.scopes:
            keys += [f"{prefix}:{scope}:used", f"{prefix}:{scope}:tpm:{reservation.minute}"]
        keys += [
            self.channel_used_key(tenant_id, channel_key),
            f"{prefix}:channel:{channel_key}:rpm:{int(time.time() // 60)}",
            usage_stream_key(tenant_id),
            *marker,
            *reservation.slots,
            *release,
        ]
        args = [
            len(reservation.scopes),
            reservation.cost,
            cost,
            tokens - reservation.tokens,
            "1" if channel_id else "0",
            record,
            MINUTE_KEY_TTL_SECONDS,
            reservation.lease,
            "1" if marker else "0",
            SETTLED_MARKER_TTL_SECONDS,
        ]
        if not marker:
            await self._listed(tenant_id, await self._direct.run(self._settle, keys, args))
            return
        # On a cluster the master of the tenant's slot may die under this settlement: its replica takes over
        # within seconds. The marker makes sending it again safe, so it is sent until it lands or time is up.
        deadline = time.monotonic() + SETTLE_RETRY_SECONDS
        while True:
            try:
                waiting = await self._direct.run(self._settle, keys, args)
                break
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(SETTLE_RETRY_PAUSE_SECONDS)
        await self._listed(tenant_id, waiting)

    async def record(self, tenant_id: UUID, record: bytes) -> None:
        """Queue the usage record of a call that reserved nothing (refused before any provider was asked)."""
        await self._listed(tenant_id, await self._direct.run(self._record, [usage_stream_key(tenant_id)], [record]))

    async def _listed(self, tenant_id: UUID, waiting: Any) -> None:
        if int(waiting) == 1:
            # The stream was empty, so the flusher may have struck the tenant off its list: put it back.
            # (A separate command: the list is not in the tenant's hash slot.)
            await self.redis.sadd(USAGE_TENANTS_KEY, tenant_id.hex)

    async def take_channel_slot(
        self,
        tenant_id: UUID,
        channel_id: UUID,
        *,
        limit: int,
        lease: str,
        lease_seconds: int,
        wait: bool = False,
        queue_limit: int = 0,
        wait_seconds: float = 0,
    ) -> int:
        """Take a slot of a channel's calls in flight: 1 taken, 0 full (with `wait`: and now among its waiters,
        for `wait_seconds` at most), -1 full with `queue_limit` calls already waiting."""
        key = lease_key(tenant_id, f"channel:{channel_id}:inflight")
        now = _now_ms()
        keys = [key, lease_key(tenant_id, f"channel:{channel_id}:waiting")]
        args = [
            limit,
            lease,
            now,
            now + lease_seconds * 1000,
            max(lease_seconds * 2, int(wait_seconds) + 1),
            "1" if wait else "0",
            queue_limit,
            now + int(wait_seconds * 1000) + 1000,
        ]
        return int(await self._direct.run(self._take_channel_slot, keys, args))

    async def release(self, keys: list[str], lease: str) -> None:
        """Give back the slots (lease sets, as `lease_key` names them) held under `lease`; harmless if none is."""
        if keys:
            await self._direct.run(self._release, keys, [lease])

    async def renew(self, keys: list[str], lease: str, lease_seconds: int) -> None:
        """A long call still runs: its slots' leases start again."""
        if keys:
            await self._direct.run(self._renew, keys, [lease, _now_ms() + lease_seconds * 1000])

    async def close(self) -> None:
        await self._direct.close()

    async def cool_down(self, tenant_id: UUID, channel_id: UUID, seconds: int) -> None:
        await self.redis.set(f"{_prefix(tenant_id)}:channel:{channel_id}:cool", 1, ex=max(seconds, 1))

    async def end_budget_period(self, tenant_id: UUID, scope: str, counted: int) -> None:
        """A scope's period is over: `counted` (PostgreSQL's used_quota, now being zeroed) leaves its balance."""
        await self._reset_used(keys=[self.used_key(tenant_id, scope)], args=[counted])

    async def raise_balances(self, balances: dict[str, int]) -> int:
        """Raise each balance (one tenant's keys) to at least PostgreSQL's count; returns how many were low."""
        if not balances:
            return 0
        return int(await self._raise_to(keys=list(balances), args=list(balances.values())))
