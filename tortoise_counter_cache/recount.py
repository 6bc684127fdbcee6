"""`recount()`: rebuild counters from `COUNT(*)` of the children, while live writes
continue, and report the drift it repaired.

Writes that bypass `save()` and `delete()` (`bulk_create`, `QuerySet.update` and
`.delete`, database cascades, raw SQL) are never counted; `recount()` repairs them.

How a batch of parents stays exact, in ONE transaction on the parent's connection:

1. Lock the parent rows (`SELECT ... FOR UPDATE`). A child INSERT, or a move of a
   child onto one of them, must check the foreign key against the parent row, so it
   waits; so does the worker's UPDATE of these counters.
2. Lock their existing children the same way and count them per parent. Deletes and
   moves of these children wait, so the children cannot change until the commit,
   and this locking (current) read is the count.
3. Wait `settle_s`: a save whose row committed before step 2 records its delta in
   Redis right after its commit; the wait lets those deltas land.
4. Read what is still to be applied to each counter: the Redis pending delta, the
   Redis in-flight delta unless its batch token is in the ledger, and the committed
   outbox rows. These reads do not lock: an apply or drain that would change one of
   these counters cannot commit before we do (it must UPDATE a parent we locked),
   so any read made after step 1 sees exactly what those committed before it. A
   locking read would instead wait for such a transaction, which waits for us.
5. Set each counter to count - pending where it differs: once the pending deltas
   are applied after the commit, the counter equals the count.

Residual risk: a save whose Redis call fails or times out falls back to an UPDATE of
the parent. If its child row committed before step 1 and the fallback UPDATE runs
after it, the fallback waits for our lock and then adds its delta to a counter that
already includes that child: one too many. The same holds for saves made while a
process considers Redis down (they go straight to the database). Recount while Redis
is healthy, and recount again if a "redis unreachable" warning was logged meanwhile.
A process stalled longer than `settle_s` between its commit and its Redis call has
the same effect.

On SQLite there are no row locks: the transaction holds Tortoise's connection lock,
so every query of this process waits for it (writes of other processes are not
held back, so run recount while only this process writes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import stamina
from redis.exceptions import RedisError
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.transactions import in_transaction

from .apply import resolve_model
from .declaration import CounterSpec, connection_name, model_label
from .exceptions import (
    BackendUnavailableError,
    CounterCacheError,
    InvalidDeltaError,
    UnknownCounterError,
)
from .jobs import is_transient
from .keys import shard_of
from .models import CounterLedger, CounterOutbox
from .runtime import get_runtime

__all__ = ["Drift", "RecountReport", "recount"]

logger = logging.getLogger(__name__)

MAX_REPORTED_DRIFTS = 100

Progress = Callable[[int, int], object]


@dataclass(frozen=True, slots=True)
class Drift:
    """One repaired counter: the parent's primary key, its old and new value."""

    pk: Any
    old: int
    new: int


@dataclass
class RecountReport:
    """What `recount()` checked and repaired.

    Attributes:
        model: The parent model, as `app.Model`.
        column: The counter column.
        rows_checked: Parent rows recounted.
        rows_repaired: Rows whose counter was wrong and was rewritten.
        total_drift: Sum of `abs(new - old)` over the repaired rows.
        drifts: The first `MAX_REPORTED_DRIFTS` repaired rows.
        seconds: Wall time of the recount.
    """

    model: str
    column: str
    rows_checked: int = 0
    rows_repaired: int = 0
    total_drift: int = 0
    drifts: list[Drift] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, checked: int, drifts: list[Drift]) -> None:
        self.rows_checked += checked
        self.rows_repaired += len(drifts)
        self.total_drift += sum(abs(d.new - d.old) for d in drifts)
        room = MAX_REPORTED_DRIFTS - len(self.drifts)
        self.drifts.extend(drifts[: max(room, 0)])


async def recount(
    model: type[Model] | str,
    column: str,
    pks: Sequence[Any] | None = None,
    batch_rows: int = 1000,
    settle_s: float | None = None,
    progress: Progress | None = None,
) -> RecountReport:
    """Rebuild `model.column` from the number of children, `batch_rows` parents at a
    time in primary-key order, and return the drift repaired.

    Safe while the application writes (see the module documentation for how, and
    for the one residual risk). Each batch holds its parents' and children's row
    locks for about `settle_s`, so writes to those rows wait that long.

    Args:
        model: The parent model class, or its name `app.Model`.
        column: A counter column of `model` that a foreign key drives.
        pks: Recount only these primary keys (a list); all rows by default.
        batch_rows: Parents per transaction.
        settle_s: How long a batch waits for deltas of just-committed saves to
            reach Redis; default twice the Redis timeout plus 0.1 s, because a save
            may wait for one Redis call in flight before its own is sent.
        progress: Called as `progress(rows_checked, rows_total)` after each batch.

    Raises:
        UnknownCounterError: `model` is not registered, or `column` is not a counter
            driven by a foreign key.
        InvalidDeltaError: `pks`, `batch_rows` or `settle_s` is unusable.
        BackendUnavailableError: Redis cannot be reached.
    """
    started = time.perf_counter()
    parent = _parent_model(model)
    spec = counter_spec(parent, column)
    _check_arguments(pks, batch_rows, settle_s, progress)
    runtime = get_runtime()
    settle = settle_s
    if settle is None:
        settle = 2 * runtime.settings.redis_timeout_s + 0.1
    await _check_redis()
    report = RecountReport(model_label(parent), column)
    total = len(set(pks)) if pks is not None else await parent.all().count()
    async for batch in _batches(parent, pks, batch_rows):
        checked, drifts = await _recount_batch(spec, batch, settle)
        report.add(checked, drifts)
        if drifts:
            logger.warning(
                "drift repaired model=%s column=%s rows=%d drift=%d",
                parent.__name__,
                column,
                len(drifts),
                sum(abs(d.new - d.old) for d in drifts),
            )
        if progress is not None:
            progress(report.rows_checked, max(total, report.rows_checked))
    report.seconds = time.perf_counter() - started
    logger.info(
        "recount finished model=%s column=%s checked=%d repaired=%d drift=%d",
        parent.__name__,
        column,
        report.rows_checked,
        report.rows_repaired,
        report.total_drift,
    )
    return report


def _parent_model(model: type[Model] | str) -> type[Model]:
    if isinstance(model, str):
        try:
            return resolve_model(model)
        except LookupError:
            raise UnknownCounterError(
                f"No registered model {model!r}; name it as app.Model (for example "
                "models.Post) and list its module in the Tortoise config."
            ) from None
    if not isinstance(model, type) or not issubclass(model, Model):
        raise UnknownCounterError(
            f"recount() needs a Tortoise model class or 'app.Model', got {model!r}."
        )
    if model._meta.app is None:
        raise UnknownCounterError(
            f"{model.__name__} is not registered with Tortoise; list its module in the "
            "Tortoise config and call Tortoise.init() first."
        )
    return model


def counter_spec(parent: type[Model], column: str) -> CounterSpec:
    """The foreign-key counter held in `parent.column`."""
    specs: list[CounterSpec] = [
        spec
        for child in Tortoise.apps.get_models_iterable()
        for spec in getattr(child, "_cc_specs", ())
        if spec.parent is parent
    ]
    for spec in specs:
        if spec.column == column:
            return spec
    counted = ", ".join(sorted(s.column for s in specs)) or "none"
    raise UnknownCounterError(
        f"{parent.__name__} has no counter column {column!r} driven by a foreign "
        f"key; its counted columns are: {counted}. Declare one with "
        "async_counter_cache() on the child's foreign key."
    )


def _check_arguments(pks: Any, batch_rows: Any, settle_s: Any, progress: Any) -> None:
    if not _is_int(batch_rows) or batch_rows < 1:
        raise InvalidDeltaError(
            f"batch_rows must be a positive integer, got {batch_rows!r}; 1000 is a "
            "good default."
        )
    if pks is not None:
        if not isinstance(pks, list | tuple):
            raise InvalidDeltaError(
                f"pks must be a list of primary keys or None for every row, got "
                f"{type(pks).__name__}."
            )
        bad = [pk for pk in pks if not (_is_int(pk) or isinstance(pk, str))]
        if bad:
            raise InvalidDeltaError(
                f"pks must hold ints or strs, got {bad[0]!r}; pass primary key values."
            )
    if settle_s is not None and (
        not (_is_int(settle_s) or isinstance(settle_s, float)) or settle_s < 0
    ):
        raise InvalidDeltaError(
            f"settle_s must be a number of seconds, 0 or more, got {settle_s!r}; "
            "leave it None for the safe default."
        )
    if progress is not None and not callable(progress):
        raise InvalidDeltaError(
            f"progress must be a callable taking (rows_checked, rows_total), got "
            f"{progress!r}."
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _check_redis() -> None:
    try:
        await get_runtime().store.client.ping()
    except (RedisError, OSError) as error:
        raise BackendUnavailableError(
            f"recount() needs Redis to read pending deltas, and it cannot be "
            f"reached: {error}. Check COUNTER_CACHE_REDIS_URL."
        ) from error


async def _batches(
    parent: type[Model], pks: Sequence[Any] | None, batch_rows: int
) -> AsyncIterator[list[Any]]:
    if pks is not None:
        unique = list(dict.fromkeys(pks))
        for start in range(0, len(unique), batch_rows):
            yield unique[start : start + batch_rows]
        return
    pk_attr = parent._meta.pk_attr
    last: Any = None
    while True:
        query = parent.all() if last is None else parent.filter(pk__gt=last)
        batch = list(
            await query.order_by(pk_attr)
            .limit(batch_rows)
            .values_list(pk_attr, flat=True)
        )
        if not batch:
            return
        yield batch
        last = batch[-1]


def _is_retryable(error: Exception) -> bool:
    return not isinstance(error, CounterCacheError) and is_transient(error)


@stamina.retry(on=_is_retryable, attempts=6, wait_initial=0.05, wait_max=2.0)
async def _recount_batch(
    spec: CounterSpec, pks: list[Any], settle_s: float
) -> tuple[int, list[Drift]]:
    """Recount one batch (steps 1 to 5 of the module documentation); returns the
    rows checked and the drifts repaired. A deadlock retries the whole batch."""
    parent, child = spec.parent, spec.child
    pk_attr = parent._meta.pk_attr
    lookup = spec.lookup or pk_attr
    async with in_transaction(connection_name(parent)) as connection:
        # values()/values_list() drop FOR UPDATE in Tortoise 1.1: fetch objects.
        locked = await (
            parent.filter(**{f"{pk_attr}__in": pks})
            .using_db(connection)
            .order_by(pk_attr)
            .select_for_update()
            .only(*{pk_attr, lookup, spec.column})
        )
        if not locked:
            return 0, []
        rows = [(r.pk, getattr(r, lookup), getattr(r, spec.column)) for r in locked]
        keys = [row[1] for row in rows]
        children = await (
            child.filter(**{f"{spec.source_field}__in": keys})
            .using_db(connection)
            .order_by(child._meta.pk_attr)
            .select_for_update()
            .only(child._meta.pk_attr, spec.source_field)
        )
        counts = Counter(getattr(row, spec.source_field) for row in children)
        await asyncio.sleep(settle_s)
        pending = await _pending(spec, keys, connection)
        drifts: list[Drift] = []
        for pk, key, old in rows:
            new = counts.get(key, 0) - pending.get(key, 0)
            logger.debug(
                "counter recounted model=%s pk=%s children=%d pending=%+d old=%d",
                parent.__name__,
                pk,
                counts.get(key, 0),
                pending.get(key, 0),
                old,
            )
            if new != old:
                await (
                    parent.filter(**{pk_attr: pk})
                    .using_db(connection)
                    .update(**{spec.column: new})
                )
                drifts.append(Drift(pk, int(old), new))
    return len(rows), drifts


async def _pending(
    spec: CounterSpec, keys: list[Any], connection: BaseDBAsyncClient
) -> dict[Any, int]:
    """Per parent key: the delta recorded but not yet applied to its counter."""
    runtime = get_runtime()
    counters = {spec.ref(key).encode(): key for key in keys}
    try:
        peeks = await asyncio.gather(
            *(
                runtime.store.peek(shard_of(spec.ref(key), runtime.settings.shards), c)
                for c, key in counters.items()
            )
        )
    except (RedisError, OSError) as error:
        raise BackendUnavailableError(
            f"recount() lost Redis while reading pending deltas: {error}. Check "
            "COUNTER_CACHE_REDIS_URL and retry."
        ) from error
    tokens = {token for _, inflight, token in peeks if inflight and token}
    library_db = connection if _same_connection(spec.parent) else None
    applied: set[str] = set()
    if tokens:
        found = await (
            CounterLedger.filter(token__in=tokens)
            .using_db(library_db)
            .values_list("token", flat=True)
        )
        applied = {str(token) for token in found}
    pending: dict[Any, int] = {}
    for key, (waiting, inflight, token) in zip(counters.values(), peeks, strict=True):
        pending[key] = waiting + (inflight if token not in applied else 0)
    outbox = await (
        CounterOutbox.filter(counter__in=list(counters))
        .using_db(library_db)
        .values_list("counter", "delta", "record_id", "shard")
    )
    for counter, delta, record_id, shard in outbox:
        if record_id and shard is not None and await _record_ran(shard, record_id):
            continue  # a copy the worker will drop: Redis holds this delta already
        key = counters[counter]
        pending[key] = pending.get(key, 0) + int(delta)
    return pending


async def _record_ran(shard: int, record_id: str) -> bool:
    """True when Redis shows the record call `record_id` ran on `shard`."""
    store = get_runtime().store
    marker = await store.client.get(store.keys(shard).marker(record_id))
    return marker in (b"1", "1")


def _same_connection(parent: type[Model]) -> bool:
    return connection_name(CounterLedger) == connection_name(parent)
