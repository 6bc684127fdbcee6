"""Per-event-loop state: Redis clients, the SAQ queue and the group-commit recorder.

Redis connections belong to the event loop that opened them, so each loop gets its
own `Runtime`. `configure()` drops them all; the next call builds new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from typing import Any

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

from .settings import Settings, get_settings
from .store import DeltaStore, build_client

__all__ = ["Runtime", "get_runtime", "reset"]

logger = logging.getLogger(__name__)

APPLY_JOB = "counter_cache.apply_shard"
RECONCILE_JOB = "counter_cache.reconcile"


class Runtime:
    """Everything one event loop needs to record deltas and enqueue jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = DeltaStore(build_client(settings), settings)
        self._queue: RedisQueue | None = None
        self.redis_down_until = 0.0
        self._handovers: set[asyncio.Task[None]] = set()
        from .recorder import GroupCommit  # recorder needs Runtime's type only

        self.recorder = GroupCommit(self)

    @property
    def queue(self) -> RedisQueue:
        """The SAQ queue the application enqueues to. It makes no blocking reads
        (the worker's own queue does), so a hung Redis must not hang a save: its
        calls time out like the delta client's."""
        if self._queue is None:
            timeout_s = max(self.settings.redis_timeout_s, 5.0)
            client: Any = Redis.from_url(
                self.settings.effective_queue_url,
                socket_timeout=timeout_s,
                socket_connect_timeout=min(self.settings.redis_timeout_s, 0.5),
            )
            self._queue = RedisQueue(client, name=self.settings.queue)
        return self._queue

    async def enqueue_apply(self, shard: int) -> None:
        """Queue one apply job for a shard. The job key is unique on purpose: SAQ
        refuses a key that is queued or running, and the lease already makes sure
        only one job is queued per shard."""
        key = f"{self.settings.key_prefix}:{shard}:{uuid.uuid4().hex}"
        await self.queue.enqueue(
            APPLY_JOB,
            key=key,
            shard=shard,
            timeout=self.settings.job_timeout_s,
            retries=8,
            retry_delay=0.5,
            retry_backoff=30,
            ttl=60,
        )
        logger.debug("apply job queued shard=%d key=%s", shard, key)

    def hand_over(self, shards: list[int]) -> None:
        """Queue apply jobs for newly armed shards in the background."""
        if not shards:
            return
        task = asyncio.get_running_loop().create_task(self._enqueue_all(shards))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _enqueue_all(self, shards: list[int]) -> None:
        await asyncio.gather(*(self._enqueue_one(shard) for shard in shards))

    async def _enqueue_one(self, shard: int) -> None:
        try:
            await self.enqueue_apply(shard)
        except Exception as error:
            # Free the lease so that the next save, or the worker's reconciler,
            # schedules the shard again; if even that fails, the lease expires.
            logger.warning("apply job not queued shard=%d error=%r", shard, error)
            with contextlib.suppress(Exception):
                await self.store.client.delete(self.store.keys(shard).lease)

    async def wait_for_handovers(self) -> None:
        """Wait until every apply job this loop armed has been queued."""
        while self._handovers:
            await asyncio.gather(*self._handovers, return_exceptions=True)

    def redis_is_down(self) -> bool:
        return time.monotonic() < self.redis_down_until

    def mark_redis_down(self, error: BaseException) -> None:
        first = not self.redis_is_down()
        self.redis_down_until = time.monotonic() + self.settings.redis_retry_after_s
        if first:
            logger.warning(
                "redis unreachable, deltas bypass redis until it answers "
                "error=%r retry_after_s=%.1f",
                error,
                self.settings.redis_retry_after_s,
            )

    async def aclose(self) -> None:
        await self.wait_for_handovers()
        await self.store.client.aclose()
        if self._queue is not None:
            await self._queue.disconnect()


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)


def get_runtime() -> Runtime:
    """The runtime of the running event loop, built on first use."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None or runtime.settings is not get_settings():
        runtime = _runtimes[loop] = Runtime(get_settings())
    return runtime


def reset() -> None:
    """Forget every runtime (their connections close when collected)."""
    _runtimes.clear()


async def close_runtime() -> None:
    """Close the running loop's Redis connections, if any were opened."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.pop(loop, None)
    if runtime is not None:
        await runtime.aclose()
