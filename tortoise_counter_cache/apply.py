"""Applying deltas to the database: `UPDATE parent SET col = col + delta`.

Deltas are grouped by (model, column, delta), so a batch of 10,000 counters that
each moved by +1 costs one UPDATE per chunk of rows, not one per counter.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import ConfigurationError as TortoiseConfigurationError
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from .declaration import INTEGER_FIELDS
from .keys import CounterRef

__all__ = ["ApplyReport", "apply_deltas", "resolve_model"]

logger = logging.getLogger(__name__)

CHUNK_ROWS = 500
MAX_ABS_DELTA = 2**62


@dataclass
class ApplyReport:
    """What one application of deltas did."""

    statements: int = 0
    counters: int = 0
    missing_rows: int = 0
    dropped: list[str] = field(default_factory=list)


def resolve_model(label: str) -> type[Model]:
    """The registered model named `app.Model`; raises LookupError if there is none."""
    app, _, name = label.partition(".")
    try:
        model: type[Model] = Tortoise.apps.get_model(app, name)
        return model
    except (KeyError, TortoiseConfigurationError, AttributeError) as error:
        raise LookupError(f"no registered model {label!r}") from error


def _group(
    deltas: dict[str, int], report: ApplyReport
) -> dict[tuple[type[Model], str, str, int], list[Any]]:
    groups: dict[tuple[type[Model], str, str, int], list[Any]] = defaultdict(list)
    for raw, delta in deltas.items():
        if delta == 0:
            continue
        try:
            ref = CounterRef.decode(raw)
            model = resolve_model(ref.model_label)
            column = model._meta.fields_map.get(ref.column)
            if not isinstance(column, INTEGER_FIELDS) or column.pk:
                raise LookupError(
                    f"{ref.model_label} has no integer column {ref.column!r}"
                )
            if abs(delta) > MAX_ABS_DELTA:
                raise ValueError(f"delta {delta} is out of range")
            lookup = ref.lookup or model._meta.pk_attr
            if lookup not in model._meta.fields_map:
                raise LookupError(f"{ref.model_label} has no field {lookup!r}")
        except (ValueError, LookupError) as error:
            logger.error(
                "delta dropped counter=%s delta=%+d reason=%s", raw, delta, error
            )
            report.dropped.append(raw)
            continue
        groups[(model, ref.column, lookup, delta)].append(ref.value)
    return groups


async def apply_deltas(
    deltas: dict[str, int],
    connection: BaseDBAsyncClient,
    keep_going: Callable[[Exception], bool] | None = None,
) -> ApplyReport:
    """Apply encoded deltas through `connection` (the caller owns the transaction).

    Counters that name no registered model or integer column are logged and
    dropped; rows that no longer exist are logged and their deltas dropped.

    With `keep_going`, each statement runs in its own savepoint, and a statement
    whose error `keep_going` accepts (an out-of-range value, a failed CHECK) is
    rolled back, logged and dropped while the others apply: one bad counter must
    not hold back every counter of its batch forever.
    """
    report = ApplyReport()
    for (model, column, lookup, delta), values in _group(deltas, report).items():
        values.sort(key=repr)
        for start in range(0, len(values), CHUNK_ROWS):
            chunk = values[start : start + CHUNK_ROWS]
            if keep_going is None:
                await _update(model, column, lookup, delta, chunk, connection, report)
                continue
            try:
                async with in_transaction(connection.connection_name) as savepoint:
                    await _update(
                        model, column, lookup, delta, chunk, savepoint, report
                    )
            except Exception as error:
                if not keep_going(error):
                    raise
                logger.error(
                    "delta dropped model=%s column=%s delta=%+d rows=%d reason=%r",
                    model.__name__,
                    column,
                    delta,
                    len(chunk),
                    error,
                )
                report.dropped += [str(value) for value in chunk]
    return report


async def _update(
    model: type[Model],
    column: str,
    lookup: str,
    delta: int,
    values: list[Any],
    connection: BaseDBAsyncClient,
    report: ApplyReport,
) -> None:
    query = model.filter(**{f"{lookup}__in": values}).using_db(connection)
    if len(values) == 1:
        query = model.filter(**{lookup: values[0]}).using_db(connection)
    rows = await query.update(**{column: F(column) + delta})
    report.statements += 1
    report.counters += len(values)
    if rows < len(values):
        report.missing_rows += len(values) - rows
        logger.warning(
            "parent missing, delta dropped model=%s column=%s delta=%+d missing=%d",
            model.__name__,
            column,
            delta,
            len(values) - rows,
        )
