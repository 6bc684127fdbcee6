"""`cache_and_enqueue()`: a delta for any integer column, through the same path as the
deltas of counted foreign keys."""

from __future__ import annotations

from typing import Any, Literal

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from .apply import MAX_ABS_DELTA
from .declaration import counter_ref, integer_column
from .exceptions import InvalidDeltaError, UnknownCounterError
from .recording import record

__all__ = ["cache_and_enqueue"]

_DIRECTIONS = {"increment": 1, "decrement": -1}


async def cache_and_enqueue(
    model: type[Model],
    pk: Any,
    column: str,
    direction: Literal["increment", "decrement"],
    by: int = 1,
    *,
    using_db: BaseDBAsyncClient | None = None,
) -> None:
    """Change `column` of the `model` row with primary key `pk` by `by`, later.

    The delta goes where a counted save's would: Redis and a worker job, or the
    transactional outbox when called inside a transaction (it then counts only if
    the transaction commits). Use it for counts that no foreign key drives.

    Args:
        model: A registered Tortoise model class.
        pk: Primary key of the row (int or str).
        column: An integer column of `model`.
        direction: `"increment"` or `"decrement"`.
        by: A positive amount, 1 by default.
        using_db: The connection or transaction to count in; by default the one the
            model would write through.

    Raises:
        UnknownCounterError: `model` is not a registered model, or `column` is not
            one of its integer columns.
        InvalidDeltaError: an unknown direction, a `by` that is not a positive
            integer, or a `pk` that is not an int or str.
    """
    if not isinstance(model, type) or not issubclass(model, Model):
        raise UnknownCounterError(
            f"cache_and_enqueue() needs a Tortoise model class, got {model!r}."
        )
    if model._meta.app is None:
        raise UnknownCounterError(
            f"{model.__name__} is not registered with Tortoise; list its module in the "
            "Tortoise config and call Tortoise.init() first."
        )
    integer_column(model, column)
    if direction not in _DIRECTIONS:
        raise InvalidDeltaError(
            f"direction must be 'increment' or 'decrement', got {direction!r}."
        )
    if not isinstance(by, int) or isinstance(by, bool) or not 0 < by <= MAX_ABS_DELTA:
        raise InvalidDeltaError(
            f"by must be a positive integer up to 2**62, got {by!r}; pass "
            "direction='decrement' to count down."
        )
    if not isinstance(pk, int | str) or isinstance(pk, bool):
        raise InvalidDeltaError(
            f"pk must be an int or a str, got {type(pk).__name__} {pk!r}."
        )
    try:  # 5 and "5" must be one counter, not two that clash when applied
        pk = model._meta.pk.to_python_value(pk)
    except (TypeError, ValueError):
        raise InvalidDeltaError(
            f"pk {pk!r} is not a valid primary key of {model.__name__}."
        ) from None
    db = using_db or model._choose_db(True)
    await record([(counter_ref(model, column, pk), _DIRECTIONS[direction] * by)], db)
