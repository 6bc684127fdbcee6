"""Specification: `cache_and_enqueue()` counts any integer column through the same
path, and refuses bad input without touching any counter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from saq import Worker

from tests.conftest import eventually
from tests.models import User
from tortoise_counter_cache import (
    InvalidDeltaError,
    UnknownCounterError,
    cache_and_enqueue,
)


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
