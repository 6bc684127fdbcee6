"""Exact counts at once in your own tests: no Redis, no worker.

Inside `inline_counters()` every delta is applied straight away through the
connection of the save that caused it, so a test can assert a count right after a
`create()`. Inside a transaction the UPDATE is part of it, so a rollback undoes it.

```python
from tortoise_counter_cache.testing import inline_counters

async def test_comment_counts() -> None:
    with inline_counters():
        await Comment.create(post=post, user=user)
        await post.refresh_from_db()
        assert post.count_of_comments == 1
```

As a pytest plugin (`pytest_plugins = ["tortoise_counter_cache.testing"]`) it also
provides the fixture `counter_cache_inline`.

Inline mode is global to the process: do not run it alongside code that expects
the worker to apply deltas.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

from .recording import is_inline, set_inline

__all__ = ["counter_cache_inline", "inline_counters"]

FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


class inline_counters(contextlib.ContextDecorator):
    """Apply counters inline while active: a context manager (`with` or
    `async with`) and a decorator of sync or async functions. It restores the mode
    that was in force before, so it nests."""

    def __init__(self) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> inline_counters:
        self._previous.append(set_inline(True))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        set_inline(self._previous.pop())

    async def __aenter__(self) -> inline_counters:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    def __call__(self, function: FunctionT) -> FunctionT:
        """Decorate a sync or async function so it runs with inline counters."""
        if not inspect.iscoroutinefunction(function):
            return super().__call__(function)

        @functools.wraps(function)
        async def run_inline(*args: Any, **kwargs: Any) -> Any:
            with inline_counters():
                return await function(*args, **kwargs)

        return cast(FunctionT, run_inline)

    @staticmethod
    def active() -> bool:
        """True while counters are applied inline."""
        return is_inline()


try:
    import pytest
except ImportError:  # the fixture exists only where pytest is installed
    pass
else:

    @pytest.fixture
    def counter_cache_inline() -> Iterator[None]:
        """Pytest fixture: counters are applied inline for the duration of a test."""
        with inline_counters():
            yield
