"""`CounterCacheMixin`: turns saves and deletes of counted children into deltas, and
keeps a parent's own `save()` from writing its counter columns back.

Why `save()` and `delete()` are overridden rather than Tortoise signals used:
signals are looked up by exact class, `post_delete` fires even when no row was
deleted, and a listener cannot see whether its write won a race. Here a delete
counts only when its DELETE removed a row, and a move of a child to another parent
is a compare-and-set on the old foreign key, so concurrent deletes and moves of one
row are counted once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, TypeVar

import stamina
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.exceptions import OperationalError

from .declaration import CounterSpec
from .exceptions import CounterCacheError
from .keys import CounterRef
from .recording import record

__all__ = ["CounterCacheMixin"]

logger = logging.getLogger(__name__)

_MOVE_ATTEMPTS = 8

T = TypeVar("T")


class CounterCacheMixin:
    """Put it first among the bases of every model that has or holds counters:
    `class Comment(CounterCacheMixin, Model)`.

    On a child it records +1 when a row is created, -1 when a row is really deleted,
    and -1/+1 when a counted foreign key moves. On a parent, `save()` without
    `update_fields` leaves the counter columns out of its UPDATE, so a stale
    in-memory count never overwrites the real one (as Rails does since 7.1).

    Writes that bypass `save()`/`delete()` (`bulk_create`, `QuerySet.update` and
    `.delete`, database cascades, raw SQL) are not counted; repair their counters
    with `recount()`.
    """

    _cc_specs: ClassVar[tuple[CounterSpec, ...]] = ()
    _cc_counter_columns: ClassVar[frozenset[str]] = frozenset()
    _cc_snapshot: dict[str, Any]
    pk: Any  # provided by tortoise.models.Model

    @classmethod
    def _init_from_db(cls, **kwargs: Any) -> Any:
        instance = super()._init_from_db(**kwargs)  # type: ignore[misc]
        if cls._cc_specs:
            instance._cc_take_snapshot()
        return instance

    def _cc_take_snapshot(self) -> None:
        self._cc_snapshot = {
            s.source_field: getattr(self, s.source_field, None) for s in self._cc_specs
        }

    async def save(
        self,
        using_db: BaseDBAsyncClient | None = None,
        update_fields: Iterable[str] | None = None,
        force_create: bool = False,
        force_update: bool = False,
    ) -> None:
        model: Any = self
        db = using_db or model._choose_db(True)
        fields = list(update_fields) if update_fields is not None else None
        creating = _is_create(model, fields, force_create, force_update)
        if not creating and fields is None and self._cc_counter_columns:
            fields = _fields_without_counters(model, self._cc_counter_columns)
        if not creating and self._cc_specs:
            # The move is committed by its compare-and-set (or is part of the
            # caller's transaction), so it is counted even if the rest of the save
            # fails below.
            moves = await self._cc_move(db, fields)
            if moves:
                await record(moves, db)
            # The compare-and-set above owns the counted keys: writing them again
            # here could undo a concurrent move that was already counted.
            fields = _fields_without_keys(model, fields, self._cc_specs)
            if not fields and force_update:
                # Only counted keys changed and they are written: Tortoise would
                # take its empty UPDATE (0 rows) for a missing row and raise.
                force_update, model._saved_in_db = False, True
        await _retrying_deadlocks(
            db,
            lambda: super(CounterCacheMixin, self).save(  # type: ignore[misc]
                db, fields, force_create, force_update
            ),
        )
        if creating and self._cc_specs:
            self._cc_take_snapshot()
            created = [
                (spec.ref(value), 1)
                for spec, value in zip(
                    self._cc_specs, self._cc_snapshot.values(), strict=True
                )
                if value is not None
            ]
            if created:
                await record(created, db)

    async def delete(self, using_db: BaseDBAsyncClient | None = None) -> None:
        if not self._cc_specs:
            await super().delete(using_db)  # type: ignore[misc]
            return
        model: Any = self
        db = using_db or model._choose_db(True)
        if not model._saved_in_db:
            raise OperationalError("Can't delete unpersisted record")
        await model._pre_delete(db)
        values = await self._cc_delete_row(db)
        await model._post_delete(db)
        if values is not None:
            changes = [
                (spec.ref(values[spec.source_field]), -1)
                for spec in self._cc_specs
                if values[spec.source_field] is not None
            ]
            await record(changes, db)

    async def _cc_db_values(self, db: BaseDBAsyncClient) -> dict[str, Any] | None:
        """The counted foreign keys as the database has them now (locking the row
        inside a transaction), or None when the row is gone."""
        model: Any = type(self)
        query = model.filter(pk=self.pk).using_db(db)
        names = [s.source_field for s in self._cc_specs]
        # Objects, not .values(): Tortoise 1.1 drops FOR UPDATE from values queries.
        rows = await query.select_for_update().only(model._meta.pk_attr, *names)
        return {name: getattr(rows[0], name) for name in names} if rows else None

    def _cc_expected(self) -> dict[str, Any] | None:
        snapshot = getattr(self, "_cc_snapshot", None)
        return dict(snapshot) if snapshot is not None else None

    async def _cc_delete_row(self, db: BaseDBAsyncClient) -> dict[str, Any] | None:
        """Delete the row only if its counted keys are the ones we count it under;
        returns those keys, or None when another writer deleted it first."""
        model: Any = type(self)
        expected = self._cc_expected() or await self._cc_db_values(db)
        for _ in range(_MOVE_ATTEMPTS):
            if expected is None:
                return None
            rows = await model.filter(pk=self.pk, **expected).using_db(db).delete()
            if rows:
                return expected
            expected = await self._cc_db_values(db)
        raise CounterCacheError(
            f"{type(self).__name__} pk={self.pk!r} kept changing while it was deleted; "
            "the delete was not counted. Retry the delete."
        )

    async def _cc_move(
        self, db: BaseDBAsyncClient, fields: list[str] | None
    ) -> list[tuple[CounterRef, int]]:
        """Move the row's counted keys with a compare-and-set, so that of two
        concurrent moves each counts only the step it really made."""
        specs = [
            s
            for s in self._cc_specs
            if fields is None or s.source_field in fields or s.fk_name in fields
        ]
        wanted = {s.source_field: getattr(self, s.source_field, None) for s in specs}
        expected = self._cc_expected()
        if expected is not None:
            expected = {k: v for k, v in expected.items() if k in wanted}
        if expected is not None and expected == wanted:
            return []
        changes = await self._cc_compare_and_set(db, specs, expected, wanted)
        if isinstance(db, TransactionalDBClient):
            # The move may yet be rolled back: the next save asks the database.
            vars(self).pop("_cc_snapshot", None)
            return changes
        snapshot = getattr(self, "_cc_snapshot", None)
        if snapshot is None:
            self._cc_take_snapshot()
        else:
            snapshot.update(wanted)
        return changes

    async def _cc_compare_and_set(
        self,
        db: BaseDBAsyncClient,
        specs: list[CounterSpec],
        expected: dict[str, Any] | None,
        wanted: dict[str, Any],
    ) -> list[tuple[CounterRef, int]]:
        model: Any = type(self)
        for _ in range(_MOVE_ATTEMPTS):
            if expected is None:
                current = await self._cc_db_values(db)
                if current is None:  # the row is gone: nothing to move
                    return []
                expected = {k: current[k] for k in wanted}
            if expected == wanted:
                return []
            query = model.filter(pk=self.pk, **expected).using_db(db)
            rows = await _retrying_deadlocks(
                db, functools.partial(query.update, **wanted)
            )
            if rows:
                return _move_changes(specs, expected, wanted)
            expected = None
        raise CounterCacheError(
            f"{type(self).__name__} pk={self.pk!r} kept changing while it was moved; "
            "the move was not saved. Retry the save."
        )


async def _retrying_deadlocks(
    db: BaseDBAsyncClient, write: Callable[[], Awaitable[T]]
) -> T:
    """Run an autocommitted write again when the database chose it as the victim of
    a deadlock.

    On InnoDB an INSERT of a child takes shared locks on its parents for the
    foreign-key checks, while a worker's apply holds exclusive locks on the parents
    of its batch; the INSERT, the smaller transaction, is then the victim. Outside a
    transaction the statement was rolled back whole and nothing was counted yet, so
    running it again is safe. Inside a transaction the whole transaction was rolled
    back, which only its owner can retry: the error is raised as it is.
    """
    try:
        return await write()  # the common case stays free of retry bookkeeping
    except OperationalError as error:
        if isinstance(db, TransactionalDBClient) or not _is_deadlock(error):
            raise
        logger.info("deadlock victim, writing again error=%r", error)
    for attempt in stamina.retry_context(
        on=_is_deadlock, attempts=5, timeout=None, wait_initial=0.005, wait_max=0.2
    ):
        with attempt:
            return await write()
    raise AssertionError("unreachable: retry_context raises after its last attempt")


def _is_deadlock(error: Exception) -> bool:
    text = f"{error!r} {error.__cause__!r}".lower()
    return isinstance(error, OperationalError) and (
        "deadlock" in text or "1213" in text
    )


def _move_changes(
    specs: list[CounterSpec], before: dict[str, Any], after: dict[str, Any]
) -> list[tuple[CounterRef, int]]:
    changes: list[tuple[CounterRef, int]] = []
    for spec in specs:
        old, new = before[spec.source_field], after[spec.source_field]
        if old == new:
            continue
        if old is not None:
            changes.append((spec.ref(old), -1))
        if new is not None:
            changes.append((spec.ref(new), 1))
    return changes


def _is_create(
    model: Any, fields: list[str] | None, force_create: bool, force_update: bool
) -> bool:
    """Mirror of the decision `Model.save()` makes between INSERT and UPDATE."""
    if force_create:
        return True
    if force_update:
        return False
    if model._saved_in_db or fields:
        return model.pk is None
    return True


def _fields_without_keys(
    model: Any, fields: list[str] | None, specs: Iterable[CounterSpec]
) -> list[str]:
    """`fields` (default: every writable field) minus the counted foreign keys."""
    keys = {name for s in specs for name in (s.source_field, s.fk_name)}
    if fields is None:
        fields = _fields_without_counters(model, frozenset())
    return [name for name in fields if name not in keys]


def _fields_without_counters(model: Any, counters: frozenset[str]) -> list[str]:
    meta = model._meta
    return [
        name
        for name in meta.fields_db_projection
        if name not in counters
        and not meta.fields_map[name].pk
        and not meta.fields_map[name].generated
    ]
