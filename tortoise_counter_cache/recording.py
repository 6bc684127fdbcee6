"""Where a save's deltas go: Redis (the fast path), the transactional outbox, the
database directly (Redis unreachable), or nowhere yet (inline test mode applies them
at once).
"""

from __future__ import annotations

import logging

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient

from .apply import apply_deltas
from .exceptions import ConfigurationError
from .keys import CounterRef, shard_of
from .recorder import RecordUncertain
from .runtime import get_runtime

__all__ = ["record"]

logger = logging.getLogger(__name__)

_inline = False


def set_inline(enabled: bool) -> bool:
    """Switch inline mode; returns the previous value (see `testing.py`)."""
    global _inline
    previous, _inline = _inline, enabled
    return previous


def is_inline() -> bool:
    return _inline


async def record(changes: list[tuple[CounterRef, int]], db: BaseDBAsyncClient) -> None:
    """Record counter changes made by a write that went through `db`."""
    summed: dict[CounterRef, int] = {}
    for ref, delta in changes:
        summed[ref] = summed.get(ref, 0) + delta
    if _inline or isinstance(db, TransactionalDBClient):
        deltas = {ref.encode(): delta for ref, delta in summed.items() if delta}
        if not deltas:
            return
        if _inline:
            await apply_deltas(deltas, db)
        else:
            await _record_in_outbox(deltas, db)
        return
    await _record_in_redis(summed, db)


async def _record_in_outbox(
    deltas: dict[str, int],
    db: BaseDBAsyncClient,
    uncertain: RecordUncertain | None = None,
    shards: dict[str, int] | None = None,
) -> None:
    from .models import CounterOutbox

    if CounterOutbox._meta.app is None:
        raise ConfigurationError(
            "A counted row was saved inside a transaction, but the model "
            "tortoise_counter_cache.models.CounterOutbox is not registered; add "
            "'tortoise_counter_cache.models' to the models of your Tortoise app."
        )
    record_id = uncertain.record_id if uncertain is not None else None
    rows = [
        CounterOutbox(
            counter=c,
            delta=d,
            record_id=record_id,
            shard=shards[c] if shards is not None else None,
        )
        for c, d in deltas.items()
    ]
    await CounterOutbox.bulk_create(rows, using_db=db)


async def _record_in_redis(
    summed: dict[CounterRef, int], db: BaseDBAsyncClient
) -> None:
    runtime = get_runtime()
    by_shard: dict[int, dict[str, int]] = {}
    shards = runtime.settings.shards
    for ref, delta in summed.items():
        if delta:
            by_shard.setdefault(shard_of(ref, shards), {})[ref.encode()] = delta
    if not by_shard:
        return
    if not runtime.redis_is_down():
        try:
            await runtime.recorder.submit(by_shard)
            return
        except RecordUncertain as uncertain:
            # Applying directly could count twice; the worker settles it.
            runtime.mark_redis_down(uncertain)
            logger.warning(
                "record outcome unknown, deltas kept in the outbox record_id=%s",
                uncertain.record_id,
            )
            shard_by_counter = {
                c: shard for shard, counters in by_shard.items() for c in counters
            }
            await _record_in_outbox(_flat(by_shard), db, uncertain, shard_by_counter)
            return
        except Exception as error:  # refused or unreachable: nothing was sent
            runtime.mark_redis_down(error)
    report = await apply_deltas(_flat(by_shard), db)
    logger.warning("deltas applied directly counters=%d", report.counters)


def _flat(by_shard: dict[int, dict[str, int]]) -> dict[str, int]:
    """Shard -> counter -> delta as counter -> delta (only the fallbacks need it)."""
    return {c: d for counters in by_shard.values() for c, d in counters.items()}
