"""The worker's work: apply a shard's deltas, drain the outbox, reconcile.

Exactly-once, step by step, for one shard:

1. `take` renames the shard's pending hash to its in-flight hash, under a fresh
   token (or hands back a batch an earlier, killed attempt left in flight).
2. One database transaction inserts the token into the ledger table and runs the
   UPDATE statements. A batch whose token is already in the ledger was applied, so
   it is skipped; two jobs racing on one batch collide on the ledger's primary key.
3. `finish` deletes the in-flight hash, if it still holds that token.

A crash between any two steps leaves the batch in flight; the next job for the shard
resumes it at step 2, and the ledger says whether step 2 had committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import stamina
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from .apply import ApplyReport, apply_deltas
from .declaration import connection_name
from .models import CounterLedger, CounterOutbox
from .runtime import get_runtime
from .store import Taken

__all__ = ["apply_shard", "drain_outbox", "reconcile"]

logger = logging.getLogger(__name__)

_TRANSIENT_WORDS = (
    "deadlock",
    "lock wait",
    "lost connection",
    "gone away",
    "connection",
    "timeout",
    "timed out",
    "database is locked",
    "could not serialize",
)


T = TypeVar("T")

_unfinished: set[asyncio.Task[Any]] = set()


async def to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Run database work as a task of its own that cancelling the caller does not
    interrupt.

    Tortoise leaks a pooled connection when a transaction is cancelled while it
    begins, and closing the pool then waits forever for that connection. A worker
    shutting down cancels its jobs at any point, so their transactions run here and
    `wait_for_unfinished()` lets them end before the connections close.
    """
    task = asyncio.ensure_future(work)
    _unfinished.add(task)
    task.add_done_callback(_forget)
    return await asyncio.shield(task)


def _forget(task: asyncio.Task[Any]) -> None:
    _unfinished.discard(task)
    if not task.cancelled():
        task.exception()  # its caller may be gone; the error was logged or raised


async def wait_for_unfinished(timeout_s: float) -> None:
    """Wait (at most `timeout_s`) for database work whose caller was cancelled."""
    loop = asyncio.get_running_loop()
    mine = {task for task in _unfinished if task.get_loop() is loop}
    if mine:
        await asyncio.wait(mine, timeout=timeout_s)


def is_transient(error: Exception) -> bool:
    """Database trouble worth retrying: deadlocks, lock waits, dropped connections."""
    text = f"{error!r} {error.__cause__!r}".lower()
    return any(word in text for word in _TRANSIENT_WORDS)


@dataclass
class ShardRun:
    batches: int = 0
    statements: int = 0
    skipped: int = 0


async def _already_applied(token: str) -> bool:
    return await CounterLedger.filter(token=token).exists()


@stamina.retry(on=is_transient, attempts=6, wait_initial=0.05, wait_max=2.0)
async def apply_batch(taken: Taken) -> ApplyReport | None:
    """Apply a taken batch once; None when the ledger shows it was applied before."""
    if taken.resumed and await _already_applied(taken.token):
        return None
    try:
        return await to_completion(_apply_in_one_transaction(taken, isolated=False))
    except Exception as error:
        if is_transient(error):
            raise
        if isinstance(error, IntegrityError) and await _already_applied(taken.token):
            return None
        # A statement the database refuses (a counter out of its column's range,
        # a CHECK constraint) would fail this batch on every retry and hold back
        # its whole shard: apply statement by statement and drop what fails.
        logger.error(
            "batch refused, applying it statement by statement error=%r", error
        )
        return await to_completion(_apply_in_one_transaction(taken, isolated=True))


async def _apply_in_one_transaction(taken: Taken, isolated: bool) -> ApplyReport:
    async with in_transaction(connection_name(CounterLedger)) as connection:
        await CounterLedger.create(token=taken.token, using_db=connection)
        keep_going = (lambda error: not is_transient(error)) if isolated else None
        return await apply_deltas(taken.deltas, connection, keep_going)


async def apply_shard(ctx: dict[str, Any] | None, *, shard: Any) -> dict[str, int]:
    """SAQ job: apply every delta pending in `shard` until the shard is empty."""
    runtime = get_runtime()
    settings = runtime.settings
    if (
        not isinstance(shard, int)
        or isinstance(shard, bool)
        or not (0 <= shard < settings.shards)
    ):
        logger.error("job dropped reason=bad shard shard=%r", shard)
        return {"batches": 0, "statements": 0}
    run = ShardRun()
    deadline = time.monotonic() + settings.job_timeout_s / 2
    while True:
        await asyncio.sleep(settings.batch_window_s)
        if await apply_next(shard, run) is None:
            break
        if time.monotonic() > deadline:
            # A shard that never empties: hand over to a fresh job before the SAQ
            # timeout cancels this one. The lease stays held.
            await runtime.enqueue_apply(shard)
            break
    return {"batches": run.batches, "statements": run.statements}


async def apply_next(shard: int, run: ShardRun) -> Taken | None:
    """Take one batch of `shard`, apply it and finish it (steps 1 to 3 above);
    returns it, or None when the shard was empty (its lease is then released).
    Shared by the job and `flush()`."""
    runtime = get_runtime()
    taken = await runtime.store.take(shard, uuid.uuid4().hex)
    if taken is None:
        return None
    started = time.perf_counter()
    report = await apply_batch(taken)
    await runtime.store.finish(shard, taken.token)
    run.batches += 1
    if report is None:
        run.skipped += 1
        logger.info("batch already applied shard=%d token=%s", shard, taken.token)
    else:
        run.statements += report.statements
        logger.info(
            "batch applied shard=%d counters=%d statements=%d ms=%.1f",
            shard,
            report.counters,
            report.statements,
            (time.perf_counter() - started) * 1000,
        )
    return taken


async def drain_outbox(limit: int = 1000) -> int:
    """Apply up to `limit` committed outbox deltas in one transaction; returns how
    many rows it consumed. Safe with several workers: rows are claimed by DELETE,
    and a drainer that lost the race rolls back.

    Rows left by a Redis call that failed after it may have run carry its record
    id: they are applied only if the id can be claimed in Redis (the call did not
    run), and dropped if the call ran (its deltas are in Redis already). While Redis
    cannot be asked, such rows wait.
    """
    async with in_transaction(connection_name(CounterLedger)) as connection:
        rows = await (
            CounterOutbox.all()
            .using_db(connection)
            .order_by("id")
            .limit(limit)
            .values_list("id", "counter", "delta", "record_id", "shard")
        )
        verdicts = await _claim_record_ids({(r[3], r[4]) for r in rows if r[3]})
        rows = [r for r in rows if not r[3] or (r[3], r[4]) in verdicts]
        if not rows:
            return 0
        ids = [row[0] for row in rows]
        deleted = await CounterOutbox.filter(id__in=ids).using_db(connection).delete()
        if deleted != len(ids):
            raise OutboxRaced
        deltas: dict[str, int] = {}
        for _, counter, delta, record_id, shard in rows:
            if record_id and not verdicts[(record_id, shard)]:
                continue  # the record call ran: Redis has this delta already
            deltas[counter] = deltas.get(counter, 0) + int(delta)
        await apply_deltas({c: d for c, d in deltas.items() if d}, connection)
    logger.info("outbox drained rows=%d", len(rows))
    return len(rows)


async def _claim_record_ids(
    pairs: set[tuple[str, int | None]],
) -> dict[tuple[str, int | None], bool]:
    """For each (record id, shard): True to apply the outbox rows, False to drop
    them. Pairs that Redis could not settle are left out."""
    verdicts: dict[tuple[str, int | None], bool] = {}
    store = get_runtime().store
    for record_id, shard in pairs:
        if shard is None:
            verdicts[(record_id, shard)] = True
            continue
        try:
            verdicts[(record_id, shard)] = await store.claim(shard, record_id)
        except Exception as error:
            logger.warning(
                "outbox rows wait for redis record_id=%s error=%r", record_id, error
            )
            continue
        if not verdicts[(record_id, shard)]:
            logger.info(
                "outbox copy dropped, the record ran in redis record_id=%s shard=%d",
                record_id,
                shard,
            )
    return verdicts


class OutboxRaced(Exception):
    """Another worker claimed some of the rows first."""


async def drain_outbox_forever(poll_s: float) -> None:
    """Worker background task: drain the outbox, resting `poll_s` when it is empty."""
    while True:
        try:
            consumed = await to_completion(drain_outbox())
        except OutboxRaced:
            consumed = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("outbox drain failed")
            consumed = 0
        if not consumed:
            await asyncio.sleep(poll_s)


async def reconcile_forever(every_s: float) -> None:
    """Worker background task: reconcile every `every_s` seconds.

    The SAQ cron job does the same, but SAQ can stall it: its unique key stays
    blocked while a killed worker's run still looks active, and SAQ's sweep, which
    frees such keys, waits up to 5 s for each job a dead worker left active (after
    Redis restarts, hundreds). Running it here too keeps orphaned deltas moving
    whatever state the queue is in; two reconcilers at once are harmless.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            await to_completion(reconcile())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("reconcile failed error=%r", error)


async def reconcile(ctx: dict[str, Any] | None = None) -> dict[str, int]:
    """Cron job: schedule shards whose deltas no job will apply (a lost enqueue,
    retries exhausted, a killed worker) and prune the ledger."""
    runtime = get_runtime()
    settings = runtime.settings
    now_ms = time.time() * 1000
    scheduled = 0
    for state in await runtime.store.inspect(range(settings.shards)):
        if not state.pending and not state.inflight:
            continue
        stale = state.since_ms is not None and (
            now_ms - state.since_ms > settings.max_delta_age_s * 1000
        )
        if await runtime.store.arm(state.shard) or stale or state.lease_ms_left < 0:
            await runtime.enqueue_apply(state.shard)
            scheduled += 1
            logger.warning(
                "orphaned deltas scheduled shard=%d pending=%d inflight=%d",
                state.shard,
                state.pending,
                state.inflight,
            )
    cutoff = time.time() - settings.ledger_retention_s
    pruned = await to_completion(_prune_ledger(datetime.fromtimestamp(cutoff, UTC)))
    return {"scheduled": scheduled, "pruned": pruned}


async def _prune_ledger(before: datetime) -> int:
    """Delete ledger rows of batches applied before `before`."""
    deleted: int = await CounterLedger.filter(applied_at__lt=before).delete()
    return deleted
