"""Specification: `cache_and_enqueue()` counts any integer column through the same
path, and refuses bad input without touching any counter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from saq import Worker

from tests.conftest import BACKEND, eventually
from tests.models import User
from tortoise_counter_cache import (
    InvalidDeltaError,
    UnknownCounterError,
    cache_and_enqueue,
)
from tortoise_counter_cache.declaration import counter_ref
from tortoise_counter_cache.keys import shard_of
from tortoise_counter_cache.runtime import get_runtime


async def test_cache_and_enqueue_increments_and_decrements(worker: Worker) -> None:
    """Increments and decrements of any integer column are summed and applied."""
    user = await User.create()
    await cache_and_enqueue(User, user.id, "karma", "increment")
    await cache_and_enqueue(User, user.id, "karma", "increment", by=5)
    await cache_and_enqueue(User, user.id, "karma", "decrement", by=2)

    async def karma() -> bool:
        return (await User.get(id=user.id)).karma == 4

    await eventually(karma)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (
            ("nope", "increment"),
            {},
            UnknownCounterError,
            r"User has no column 'nope'; integer columns are: comments_count, karma, "
            r"posts_count\.",
        ),
        (
            ("name", "increment"),
            {},
            UnknownCounterError,
            r"User has no integer column 'name'",
        ),
        (
            ("karma", "up"),
            {},
            InvalidDeltaError,
            r"direction must be 'increment' or 'decrement', got 'up'",
        ),
        (
            ("karma", "increment"),
            {"by": 0},
            InvalidDeltaError,
            r"by must be a positive integer up to 2\*\*62, got 0",
        ),
        (
            ("karma", "increment"),
            {"by": 1.5},
            InvalidDeltaError,
            r"by must be a positive integer up to 2\*\*62, got 1.5",
        ),
        (("karma", "increment"), {"by": True}, InvalidDeltaError, r"got True"),
        (("karma", "increment"), {"by": 2**70}, InvalidDeltaError, r"up to 2\*\*62"),
    ],
)
async def test_cache_and_enqueue_refuses_bad_input(
    db: None,
    args: tuple[str, str],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """Unknown columns, non-integer columns, unknown directions and bad amounts are
    refused with the valid choices named."""
    user = await User.create()
    with pytest.raises(error, match=message):
        await cache_and_enqueue(User, user.id, *args, **kwargs)  # type: ignore[arg-type]


async def test_cache_and_enqueue_refuses_something_that_is_not_a_model(
    db: None,
) -> None:
    """A class that is not a Tortoise model is refused by name."""
    with pytest.raises(UnknownCounterError, match="needs a Tortoise model class"):
        await cache_and_enqueue(dict, 1, "karma", "increment")  # type: ignore[arg-type]


async def test_cache_and_enqueue_refuses_a_pk_of_the_wrong_type(db: None) -> None:
    """A primary key that is neither int nor str is refused."""
    with pytest.raises(InvalidDeltaError, match="pk must be an int or a str, got list"):
        await cache_and_enqueue(User, [1], "karma", "increment")


async def test_delta_for_a_missing_row_is_dropped_once_and_logged(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A delta whose parent row does not exist is logged and dropped, not retried."""
    caplog.set_level(logging.INFO, logger="tortoise_counter_cache")
    await cache_and_enqueue(User, 987654, "karma", "increment")

    async def dropped() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("parent missing, delta dropped")
        ]

    (line,) = await eventually(dropped)
    assert "model=User column=karma delta=+1 missing=1" in line
    await asyncio.sleep(0.5)
    assert len(await dropped()) == 1


async def test_same_row_by_int_and_str_pk_is_one_counter(worker: Worker) -> None:
    """A primary key given as 5 or as "5" names the same counter, so both deltas
    are applied."""
    user = await User.create()
    await cache_and_enqueue(User, user.id, "karma", "increment")
    await cache_and_enqueue(User, str(user.id), "karma", "increment")

    async def karma() -> bool:
        return (await User.get(id=user.id)).karma == 2

    await eventually(karma)


async def test_a_counter_the_database_refuses_does_not_block_its_shard(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A delta that overflows its column is dropped with an ERROR, and the other
    counters of the same batch are still applied."""
    overflowing, fine = await User.create(), await User.create()
    while same_shard(overflowing.id) != same_shard(fine.id):
        fine = await User.create()  # both counters must share one batch
    await cache_and_enqueue(User, overflowing.id, "karma", "increment", by=2**40)
    await cache_and_enqueue(User, fine.id, "karma", "increment", by=3)

    async def applied() -> bool:
        return (await User.get(id=fine.id)).karma == 3

    await eventually(applied)
    if BACKEND == "sqlite":  # SQLite stores 64-bit integers in any INTEGER column
        assert (await User.get(id=overflowing.id)).karma == 2**40
    else:
        assert (await User.get(id=overflowing.id)).karma == 0
        assert any(
            r.getMessage().startswith("delta dropped model=User column=karma")
            for r in caplog.records
        )


def same_shard(pk: int) -> int:
    ref = counter_ref(User, "karma", pk)
    return shard_of(ref, get_runtime().settings.shards)
