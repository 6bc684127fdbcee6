"""`flush()`: apply every pending delta now, and wait until it is in the database.

It drains the transactional outbox and runs, for each shard that has deltas, the
same take / apply / finish steps as the worker's job (`jobs.apply_next`). A worker
may run at the same time: the take is atomic, a batch two callers hold is applied
once because both insert its token into the ledger, and outbox rows are claimed by
DELETE, so nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from . import jobs
from .exceptions import BackendUnavailableError
from .runtime import get_runtime

__all__ = ["FlushReport", "flush"]

logger = logging.getLogger(__name__)

_PARALLEL_SHARDS = 4


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What `flush()` applied.

    Attributes:
        outbox_rows: Outbox rows (deltas saved inside transactions) applied.
        shards: Shards that had deltas in Redis.
        batches: Batches taken from those shards and applied (or found applied).
        statements: UPDATE statements run for those batches.
        seconds: Wall time of the flush.
    """

    outbox_rows: int
    shards: int
    batches: int
    statements: int
    seconds: float


async def flush(timeout_s: float = 30.0) -> FlushReport:
    """Apply every delta pending when it is called, and return once it is applied.

    Deltas recorded while it runs may be left to the worker: each shard is taken at
    most twice afresh, so a stream of live writes cannot keep it busy forever.

    Args:
        timeout_s: Give up after this many seconds.

    Raises:
        BackendUnavailableError: the flush did not finish within `timeout_s`
            (the database or Redis is slow or blocked), or Redis is unreachable.
    """
    started = time.perf_counter()
    run = jobs.ShardRun()
    try:
        async with asyncio.timeout(timeout_s):
            outbox_rows = await _drain_outbox()
            shards = await _shards_with_deltas()
            limit = asyncio.Semaphore(_PARALLEL_SHARDS)
            await asyncio.gather(*(_flush_shard(s, run, limit) for s in shards))
    except TimeoutError:
        raise BackendUnavailableError(
            f"flush() did not finish within {timeout_s}s; the database or Redis is "
            "slow or a lock is held. Retry, or pass a larger timeout_s."
        ) from None
    except (RedisError, OSError) as error:
        raise BackendUnavailableError(
            f"flush() could not reach Redis or the database: {error}. Check "
            "COUNTER_CACHE_REDIS_URL and the Tortoise connection, then retry."
        ) from error
    report = FlushReport(
        outbox_rows,
        len(shards),
        run.batches,
        run.statements,
        time.perf_counter() - started,
    )
    logger.info(
        "flushed outbox_rows=%d shards=%d batches=%d statements=%d ms=%.1f",
        report.outbox_rows,
        report.shards,
        report.batches,
        report.statements,
        report.seconds * 1000,
    )
    return report


async def _drain_outbox() -> int:
    consumed = 0
    while True:
        try:
            rows = await jobs.drain_outbox()
        except jobs.OutboxRaced:  # a worker claimed some rows first: read again
            continue
        if not rows:
            return consumed
        consumed += rows


async def _shards_with_deltas() -> list[int]:
    runtime = get_runtime()
    states = await runtime.store.inspect(range(runtime.settings.shards))
    return [state.shard for state in states if state.pending or state.inflight]


async def _flush_shard(
    shard: int, run: jobs.ShardRun, limit: asyncio.Semaphore
) -> None:
    """Apply the shard until it is empty, or until a second fresh take: the first
    fresh take held everything pending when it ran (a resumed batch does not)."""
    fresh_takes = 0
    async with limit:
        while (taken := await jobs.apply_next(shard, run)) is not None:
            fresh_takes += not taken.resumed
            if fresh_takes == 2:
                # Live writes keep coming and our take holds the lease: hand the
                # rest to a job, as a job that runs out of time does.
                await get_runtime().enqueue_apply(shard)
                return
