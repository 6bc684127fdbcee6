"""Specification of `tortoise_counter_cache.testing`: inline counters for users'
own tests, without Redis or a worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tortoise.transactions import in_transaction

import tortoise_counter_cache as cc
from tests.models import Comment, Post, User
from tortoise_counter_cache.recording import is_inline
from tortoise_counter_cache.testing import inline_counters

pytest_plugins = ["pytester"]


async def counts(post: Post) -> tuple[int, int]:
    fresh = await Post.get(id=post.id)
    user = await User.get(id=fresh.user_id)  # type: ignore[attr-defined]
    return fresh.count_of_comments, user.comments_count


async def test_inline_counters_count_at_once_without_redis(
    db: None, redis: Redis, settings: cc.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Creates, moves and deletes show in the counters right away, and nothing is
    written to Redis nor logged as a fallback."""
    caplog.set_level(logging.WARNING)
    with inline_counters():
        user = await User.create()
        first, second = await Post.create(user=user), await Post.create(user=user)
        comment = await Comment.create(user=user, post=first)
        assert await counts(first) == (1, 1)
        comment.post = second
        await comment.save()
        assert await counts(first) == (0, 1)
        assert await counts(second) == (1, 1)
        await comment.delete()
        assert await counts(second) == (0, 0)
    assert await redis.keys(f"*{settings.key_prefix}*") == []
    assert caplog.records == []


async def test_inline_counters_restore_the_previous_mode(db: None) -> None:
    """Nested switches restore what was in force before them, also after an error."""
    assert not is_inline()
    switch = inline_counters()
    with switch:
        with inline_counters():
            assert is_inline()
        assert is_inline()
        with pytest.raises(RuntimeError), inline_counters():
            raise RuntimeError("boom")
        assert is_inline()
    assert not is_inline()
    async with inline_counters():
        assert inline_counters.active()
    assert not is_inline()


async def test_inline_counters_decorate_sync_and_async_functions(db: None) -> None:
    """As a decorator it switches inline mode on for the call only."""

    @inline_counters()
    def sync_call() -> bool:
        return is_inline()

    @inline_counters()
    async def async_call() -> bool:
        return is_inline()

    assert sync_call() and await async_call()
    assert not is_inline()


async def test_inline_counters_roll_back_with_the_transaction(db: None) -> None:
    """A count made inside a transaction that rolls back is rolled back with it; one
    that commits stays."""
    with inline_counters():
        user = await User.create()
        post = await Post.create(user=user)
        with pytest.raises(RuntimeError):
            async with in_transaction() as connection:
                await Comment.create(user=user, post=post, using_db=connection)
                raise RuntimeError("roll back")
        assert await counts(post) == (0, 0)
        async with in_transaction() as connection:
            await Comment.create(user=user, post=post, using_db=connection)
        assert await counts(post) == (1, 1)


def test_counter_cache_inline_fixture_loads_as_a_pytest_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed in pytest_plugins, the module provides the `counter_cache_inline`
    fixture, which switches inline counters on for one test only."""
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    )
    pytester.makeconftest('pytest_plugins = ["tortoise_counter_cache.testing"]')
    pytester.makepyfile(
        """
        from tortoise_counter_cache.recording import is_inline

        def test_with(counter_cache_inline):
            assert is_inline()

        def test_without():
            assert not is_inline()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)
