"""The Redis side of the deltas: record, take, finish and inspect, each one Lua script.

Why Lua and not MULTI pipelines: the take script must decide on what it reads (an
empty shard releases its lease in the same step that observes it empty), which a
MULTI block cannot do. Each script touches the keys of one shard only (one hash
slot), except `record`, which on a standalone Redis may touch several shards in one
call; on a cluster the client sends one `record` call per shard.

The client never retries a script on its own (redis-py 8's default constructor
would retry ten times): a retried HINCRBY whose first reply was lost would count
twice. The recorder resends a `record` call itself, only because each call carries
a record id that makes it idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .keys import ShardKeys
from .settings import Settings

__all__ = ["DeltaStore", "ShardState", "Taken"]

logger = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster

# KEYS: per shard, (pending, since, lease, marker). ARGV: now_ms, lease_ms,
# marker_ttl_ms, then per shard the number of counters followed by (counter, delta)
# pairs. A counter whose running delta returns to zero is removed. Returns the
# 1-based positions of the shards this call armed (their lease was free), which the
# caller must hand to a job.
#
# The marker makes a record idempotent: it is set (NX) under the call's record id,
# and a shard whose marker exists is skipped. A client whose call failed after it
# may have reached Redis resends the same call, or leaves its deltas in the outbox
# under that id; the worker then claims the id (see _CLAIM) before applying them,
# so a call that did run late is never counted a second time.
_RECORD = """
local now, lease, ttl = ARGV[1], ARGV[2], ARGV[3]
local a = 4
local armed = {}
for i = 1, #KEYS, 4 do
  local n = tonumber(ARGV[a]); a = a + 1
  if redis.call('SET', KEYS[i + 3], '1', 'NX', 'PX', ttl) then
    for _ = 1, n do
      if redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1]) == 0 then
        redis.call('HDEL', KEYS[i], ARGV[a])
      end
      a = a + 2
    end
    redis.call('SET', KEYS[i + 1], now, 'NX')
    if redis.call('SET', KEYS[i + 2], '1', 'NX', 'PX', lease) then
      armed[#armed + 1] = (i + 3) / 4
    end
  else
    a = a + 2 * n
  end
end
return armed
"""

# KEYS: marker. ARGV: marker_ttl_ms. Claims a record id for the outbox: returns 1
# when no record call ran under it (and marks it so none ever will) or when a
# drainer claimed it before; 0 when the record call did run, so its deltas are in
# Redis already and the outbox copies must be dropped.
_CLAIM = """
local seen = redis.call('GET', KEYS[1])
if not seen then
  redis.call('SET', KEYS[1], 'outbox', 'PX', ARGV[1])
  return 1
end
if seen == 'outbox' then return 1 end
return 0
"""

# KEYS: pending, inflight, token, lease, since. ARGV: new token, lease_ms.
# A batch left in flight by an earlier attempt is returned again, under its old
# token, before anything new is taken: the caller then asks the ledger whether it
# was applied. An empty shard releases its lease in the same step that sees it
# empty, so a delta recorded a moment later finds the lease free and arms a new job.
_TAKE = """
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  local held = redis.call('GET', KEYS[3])
  if not held then  -- lost its token (evicted?): adopt this one, or no job ends it
    redis.call('SET', KEYS[3], ARGV[1])
    held = ARGV[1]
  end
  return {held, redis.call('HGETALL', KEYS[2])}
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[4], KEYS[5])
  return false
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[5])
return {ARGV[1], redis.call('HGETALL', KEYS[2])}
"""

# KEYS: inflight, token. ARGV: token. Clears the batch only if it is still the one
# this caller applied (a concurrent job may have finished it already).
_FINISH = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""

# KEYS: pending, inflight, lease, since. Returns the shard's state for the
# reconciler and `status`: pending counters, counters in flight, lease ms left
# (-2 when free), since (epoch ms or false).
_INSPECT = """
return {redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[2]),
        redis.call('PTTL', KEYS[3]), redis.call('GET', KEYS[4])}
"""

# KEYS: pending, since, lease. ARGV: lease_ms. Arms a shard that has work and no
# lease; returns 1 if this call armed it.
_ARM = """
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""

# KEYS: pending, inflight, token. ARGV: counter. Returns pending and in-flight delta
# of one counter and the in-flight token, read together: a token read apart could
# belong to a batch taken after the in-flight delta was read (recount needs both).
_PEEK = """
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1]),
        redis.call('GET', KEYS[3])}
"""


class PartialRecordError(Exception):
    """On a cluster, some shards of a record call took their deltas and others
    failed; resending the call (same record id) completes it."""

    def __init__(self, record_id: str, error: BaseException) -> None:
        super().__init__(f"record {record_id} reached only some shards: {error!r}")


@dataclass(frozen=True, slots=True)
class Taken:
    """A batch of deltas a job took from a shard, under a ledger token."""

    token: str
    deltas: dict[str, int]
    resumed: bool
    """True when the batch was left in flight by an earlier attempt."""


@dataclass(frozen=True, slots=True)
class ShardState:
    shard: int
    pending: int
    inflight: int
    lease_ms_left: int
    since_ms: int | None


def build_client(settings: Settings, url: str | None = None) -> RedisClient:
    """The client for deltas: short timeouts, and no retries (see module docs)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": min(settings.redis_timeout_s, 0.5),
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_cluster and url is None:
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(url or settings.redis_url, **options)


class DeltaStore:
    """Deltas of all counters, spread over `settings.shards` shards in Redis."""

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._record = client.register_script(_RECORD)
        self._claim = client.register_script(_CLAIM)
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._inspect = client.register_script(_INSPECT)
        self._arm = client.register_script(_ARM)
        self._peek = client.register_script(_PEEK)

    def keys(self, shard: int) -> ShardKeys:
        return ShardKeys(self.settings.key_prefix, shard)

    async def record(
        self, by_shard: dict[int, dict[str, int]], record_id: str | None = None
    ) -> list[int]:
        """Add deltas (shard -> counter -> delta) once under `record_id` (a fresh
        one by default); returns the shards armed by this call, for which the
        caller must enqueue an apply job. Sending the same call again is harmless."""
        record_id = record_id or uuid.uuid4().hex
        if not by_shard:
            return []
        if isinstance(self.client, RedisCluster):
            groups = [[item] for item in by_shard.items()]
            results = await asyncio.gather(
                *(self._record_group(g, record_id) for g in groups),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures and len(failures) < len(results):
                # Some shards took their deltas: the call as a whole must not be
                # mistaken for one that never reached Redis.
                raise PartialRecordError(record_id, failures[0])
            if failures:
                raise failures[0]
            return [shard for armed in results for shard in cast(list[int], armed)]
        return await self._record_group(list(by_shard.items()), record_id)

    async def _record_group(
        self, group: Sequence[tuple[int, dict[str, int]]], record_id: str
    ) -> list[int]:
        keys: list[str] = []
        args: list[Any] = [
            int(time.time() * 1000),
            self.settings.lease_ms,
            int(self.settings.record_marker_ttl_s * 1000),
        ]
        for shard, deltas in group:
            names = self.keys(shard)
            keys += [names.pending, names.since, names.lease, names.marker(record_id)]
            args.append(len(deltas))
            for counter, delta in deltas.items():
                args += [counter, delta]
        armed = cast(list[int], await self._record(keys=keys, args=args))
        return [group[position - 1][0] for position in armed]

    async def claim(self, shard: int, record_id: str) -> bool:
        """Claim `record_id` on `shard` for the outbox (see `_CLAIM`)."""
        ttl_ms = int(self.settings.record_marker_ttl_s * 1000)
        claimed = await self._claim(
            keys=[self.keys(shard).marker(record_id)], args=[ttl_ms]
        )
        return bool(claimed)

    async def take(self, shard: int, token: str) -> Taken | None:
        """Move the shard's pending deltas in flight under `token` (or return the
        batch an earlier attempt left in flight); None when the shard is empty, in
        which case its lease was released."""
        names = self.keys(shard)
        reply = await self._take(
            keys=[names.pending, names.inflight, names.token, names.lease, names.since],
            args=[token, self.settings.lease_ms],
        )
        if not reply:
            return None
        batch_token = _text(reply[0]) if reply[0] is not None else token
        deltas = _parse_deltas(shard, reply[1])
        return Taken(batch_token, deltas, resumed=batch_token != token)

    async def finish(self, shard: int, token: str) -> bool:
        names = self.keys(shard)
        done = await self._finish(keys=[names.inflight, names.token], args=[token])
        return bool(done)

    async def inspect(self, shards: Iterable[int]) -> list[ShardState]:
        async def one(shard: int) -> ShardState:
            names = self.keys(shard)
            pending, inflight, pttl, since = await self._inspect(
                keys=[names.pending, names.inflight, names.lease, names.since]
            )
            return ShardState(
                shard,
                int(pending),
                int(inflight),
                int(pttl),
                int(since) if since is not None else None,
            )

        return list(await asyncio.gather(*(one(shard) for shard in shards)))

    async def arm(self, shard: int) -> bool:
        names = self.keys(shard)
        armed = await self._arm(
            keys=[names.pending, names.since, names.lease],
            args=[self.settings.lease_ms],
        )
        return bool(armed)

    async def peek(self, shard: int, counter: str) -> tuple[int, int, str | None]:
        """Pending delta, in-flight delta and in-flight token of one counter."""
        names = self.keys(shard)
        pending, inflight, token = await self._peek(
            keys=[names.pending, names.inflight, names.token], args=[counter]
        )
        return (
            int(pending or 0),
            int(inflight or 0),
            _text(token) if inflight is not None and token is not None else None,
        )

    async def drop_all(self) -> None:
        """Delete every key of every shard, record markers included (for tests and
        `reset` tooling)."""
        async for key in self.client.scan_iter(match=f"{{{self.settings.key_prefix}:*"):
            await self.client.delete(key)


def _parse_deltas(shard: int, flat: Sequence[Any]) -> dict[str, int]:
    """A flat HGETALL reply as counter -> delta. A field whose value is not an
    integer (written by something other than this library) is logged and dropped:
    raising here would leave the batch in flight and wedge the shard forever."""
    deltas: dict[str, int] = {}
    for i in range(0, len(flat), 2):
        counter = _text(flat[i])
        try:
            deltas[counter] = int(flat[i + 1])
        except ValueError:
            logger.error(
                "delta dropped shard=%d counter=%s delta=%r reason=not an integer",
                shard,
                counter,
                flat[i + 1],
            )
    return deltas


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
