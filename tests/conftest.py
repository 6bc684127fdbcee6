"""Shared fixtures: real Redis, a real database, an in-process SAQ worker.

The database is chosen by `COUNTER_CACHE_TEST_DB`: `mysql` (MariaDB through
aiomysql, the default), `postgres` (asyncpg) or `sqlite`. Each test gets its own Redis
key prefix and SAQ queue name, and empty tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from saq import Worker
from tortoise import Tortoise
from tortoise.transactions import in_transaction

import tortoise_counter_cache as cc
from tortoise_counter_cache import runtime
from tortoise_counter_cache.worker import build_settings

REDIS_URL = os.environ.get("COUNTER_CACHE_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKEND = os.environ.get("COUNTER_CACHE_TEST_DB", "mysql")
# Worker subprocesses inherit the name, so they open the same database.
DB_NAME = os.environ.setdefault("COUNTER_CACHE_TEST_DB_NAME", f"cc_test_{os.getpid()}")
DB_URLS = {
    "mysql": f"mysql://root:@127.0.0.1:3306/{DB_NAME}",
    "postgres": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "sqlite": f"sqlite:///tmp/{DB_NAME}.sqlite3",
}
if BACKEND not in DB_URLS:
    raise RuntimeError(
        f"COUNTER_CACHE_TEST_DB={BACKEND!r}; use one of {', '.join(DB_URLS)}."
    )
DB_URL = DB_URLS[BACKEND]


def mysql_driver() -> str:
    """The MySQL driver Tortoise picked: asyncmy whenever it is importable."""
    from tortoise.backends.mysql import client

    return "asyncmy" if client.mysql.__name__.startswith("asyncmy") else "aiomysql"


_WANTED_DRIVER = os.environ.get("COUNTER_CACHE_TEST_DRIVER")
if BACKEND == "mysql" and _WANTED_DRIVER and mysql_driver() != _WANTED_DRIVER:
    raise RuntimeError(
        f"COUNTER_CACHE_TEST_DRIVER={_WANTED_DRIVER} but Tortoise loaded "
        f"{mysql_driver()}; install or hide asyncmy accordingly."
    )


def tortoise_config(*modules: str) -> dict[str, Any]:
    models = ["tests.models", "tortoise_counter_cache.models", *modules]
    return {
        "connections": {"default": DB_URL},
        "apps": {"models": {"models": models, "default_connection": "default"}},
    }


@pytest.fixture(scope="session", autouse=True)
def database() -> Any:
    """Create the test database once per session, and drop it at the end."""

    async def create() -> None:
        await Tortoise.init(config=tortoise_config(), _create_db=True)
        await Tortoise.generate_schemas(safe=True)
        await Tortoise.close_connections()

    async def drop() -> None:
        await Tortoise.init(config=tortoise_config())
        await Tortoise._drop_databases()

    asyncio.run(create())
    yield
    asyncio.run(drop())


@pytest_asyncio.fixture
async def settings() -> AsyncIterator[cc.Settings]:
    """Library settings with a key prefix and queue of this test's own."""
    name = f"cctest{uuid.uuid4().hex[:10]}"
    current = cc.configure(
        cc.Settings(
            redis_url=REDIS_URL,
            key_prefix=name,
            queue=name,
            shards=8,
            batch_window_s=0.05,
        )
    )
    yield current
    client = Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"*{name}*", count=1000):
        await client.delete(key)
    await client.aclose()
    await runtime.close_runtime()


@pytest_asyncio.fixture
async def db(settings: cc.Settings) -> AsyncIterator[None]:
    """Tortoise initialised on the test database, with every table emptied."""
    await Tortoise.init(config=tortoise_config())
    await truncate()
    yield
    await Tortoise.close_connections()


async def truncate() -> None:
    from tests.models import Comment, Post, User
    from tortoise_counter_cache.models import CounterLedger, CounterOutbox

    async with in_transaction() as connection:
        for model in (Comment, Post, User, CounterOutbox, CounterLedger):
            await model.all().using_db(connection).delete()


@pytest_asyncio.fixture
async def redis(settings: cc.Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def worker(db: None, settings: cc.Settings) -> AsyncIterator[Worker]:
    """A SAQ worker running in this test's event loop, on this test's queue."""
    options = build_settings(settings, concurrency=8, dequeue_timeout=1.0)
    running = Worker(**options)
    task = asyncio.create_task(running.start())
    yield running
    await running.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await options["queue"].disconnect()


async def eventually(
    check: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05
) -> Any:
    """Poll an async `check` until it returns a truthy value; fail after timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {value!r}")
        await asyncio.sleep(interval_s)


async def counters_exact() -> list[str]:
    """Every cached count compared with COUNT(*); returns the wrong ones."""
    from tests.models import Comment, Post, User

    wrong = []
    for user in await User.all():
        comments = await Comment.filter(user_id=user.id).count()
        posts = await Post.filter(user_id=user.id).count()
        if (user.comments_count, user.posts_count) != (comments, posts):
            wrong.append(
                f"user {user.id}: {user.comments_count}/{comments} "
                f"{user.posts_count}/{posts}"
            )
    for post in await Post.all():
        comments = await Comment.filter(post_id=post.id).count()
        if post.count_of_comments != comments:
            wrong.append(f"post {post.id}: {post.count_of_comments}/{comments}")
    return wrong


async def all_exact() -> bool:
    return not await counters_exact()
