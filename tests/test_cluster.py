"""Specification on Redis Cluster: deltas on a real three-master cluster, the SAQ
queue on the standalone Redis, and the same counting behaviour as on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from saq import Worker
from tortoise.exceptions import OperationalError

import tortoise_counter_cache as cc
from tests.cluster import (
    LocalCluster,
    cluster_available,
    start_cluster,
    start_worker_process,
    stop_worker_process,
)
from tests.conftest import DB_URL, REDIS_URL, all_exact, counters_exact, eventually
from tests.models import Comment, Post, User
from tortoise_counter_cache import runtime
from tortoise_counter_cache.jobs import reconcile
from tortoise_counter_cache.keys import CounterRef, ShardKeys, shard_of
from tortoise_counter_cache.models import CounterLedger
from tortoise_counter_cache.runtime import get_runtime
from tortoise_counter_cache.worker import build_settings

pytestmark = pytest.mark.skipif(
    not cluster_available(), reason="redis-server and redis-cli are not installed"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One local three-master cluster for the whole module."""
    started = start_cluster()
    yield started
    started.stop()


@pytest_asyncio.fixture
async def settings(cluster: LocalCluster) -> AsyncIterator[cc.Settings]:
    """Deltas on the cluster, the queue on the standalone Redis, names of this
    test's own (overrides conftest's standalone `settings`)."""
    name = f"cctest{uuid.uuid4().hex[:10]}"
    current = cc.configure(
        cc.Settings(
            redis_url=cluster.url,
            redis_cluster=True,
            queue_url=REDIS_URL,
            key_prefix=name,
            queue=name,
            shards=8,
            batch_window_s=0.05,
        )
    )
    yield current
    await runtime.close_runtime()
    nodes = RedisCluster.from_url(cluster.url)
    await nodes.flushall(target_nodes=RedisCluster.PRIMARIES)
    await nodes.aclose()
    client = Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"*{name}*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest_asyncio.fixture
async def deltas(settings: cc.Settings) -> AsyncIterator[RedisCluster]:
    """A client of the cluster that holds the deltas."""
    client = RedisCluster.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def pending_keys(client: RedisCluster, settings: cc.Settings) -> list[str]:
    keys = []
    async for key in client.scan_iter(match=f"*{settings.key_prefix}*", count=1000):
        keys.append(key)
    return keys


async def test_cluster_keys_of_a_shard_share_one_slot(
    settings: cc.Settings, deltas: RedisCluster
) -> None:
    """Every key of a shard hashes to one slot, and the shards are spread over more
    than one master of the cluster."""
    shards = [ShardKeys(settings.key_prefix, s) for s in range(settings.shards)]
    for keys in shards:
        names = [keys.pending, keys.since, keys.lease, keys.inflight, keys.token]
        assert len({key_slot(name.encode()) for name in names}) == 1
    await deltas.initialize()
    masters = {deltas.get_node_from_key(keys.pending).name for keys in shards}
    assert len(masters) > 1


async def test_cluster_create_delete_move_count_exactly(worker: Worker) -> None:
    """Creates, a double delete and moves (by object, by id, to NULL) give exact
    counts when the deltas live on a cluster."""
    user = await User.create(name="ann")
    first, second = await Post.create(user=user), await Post.create(user=user)
    comment = await Comment.create(user=user, post=first)
    doomed = await Comment.create(user=user, post=first)
    await Comment.create(user=user, post=second)
    twin = await Comment.get(id=doomed.id)
    await doomed.delete()
    await twin.delete()
    comment.post = second
    await comment.save()
    loaded = await Comment.get(id=comment.id)
    loaded.post_id = None
    await loaded.save()

    await eventually(all_exact)
    counts = [(await Post.get(id=p.id)).count_of_comments for p in (first, second)]
    assert counts == [0, 1]
    assert (await User.get(id=user.id)).comments_count == 2


async def test_cluster_burst_on_one_post_counts_every_comment(
    worker: Worker, deltas: RedisCluster, settings: cc.Settings
) -> None:
    """Three hundred concurrent comments on one post are all counted, and the
    shards are empty afterwards."""
    user = await User.create()
    post = await Post.create(user=user)
    await asyncio.gather(*(Comment.create(user=user, post=post) for _ in range(300)))

    await eventually(all_exact, timeout_s=30)
    assert (await Post.get(id=post.id)).count_of_comments == 300

    async def drained() -> bool:
        keys = await pending_keys(deltas, settings)
        return not [k for k in keys if k.endswith((":pending", ":inflight"))]

    await eventually(drained)


async def test_cluster_cache_and_enqueue_applies_any_column(worker: Worker) -> None:
    """`cache_and_enqueue` increments and decrements a plain integer column through
    the cluster."""
    user = await User.create()
    await cc.cache_and_enqueue(User, user.id, "karma", "increment", by=5)
    await cc.cache_and_enqueue(User, user.id, "karma", "decrement")

    async def karma_is_four() -> bool:
        return (await User.get(id=user.id)).karma == 4

    await eventually(karma_is_four)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
async def test_cluster_reconcile_schedules_orphaned_deltas(
    db: None, settings: cc.Settings, deltas: RedisCluster
) -> None:
    """Deltas whose job was never queued (lease armed, then lost) are found by the
    reconciler and applied by the next worker."""
    user = await User.create()
    post = await Post.create(user=user)
    ref = CounterRef("models.Post", "count_of_comments", post.id)
    shard = shard_of(ref, settings.shards)
    store = get_runtime().store
    await store.drop_all()  # forget the deltas of the creates above: one shard only
    armed = await store.record({shard: {ref.encode(): 3}})
    assert armed == [shard]  # armed, but no job was queued: orphaned
    await deltas.delete(store.keys(shard).lease)  # the lease of the lost job expired

    result = await reconcile(None)
    assert result["scheduled"] == 1
    options = build_settings(settings, concurrency=4, dequeue_timeout=1.0)
    worker = Worker(**options)
    task = asyncio.create_task(worker.start())

    async def applied() -> bool:
        return (await Post.get(id=post.id)).count_of_comments == 3

    try:
        await eventually(applied)
    finally:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await options["queue"].disconnect()


async def test_cluster_store_peek_finish_and_drop_all(
    db: None, settings: cc.Settings, deltas: RedisCluster
) -> None:
    """Peek reads a counter's pending and in-flight delta with its token, finish
    clears the batch, and drop_all empties every shard of the cluster."""
    store = get_runtime().store
    ref = CounterRef("models.Post", "count_of_comments", 7)
    shard = shard_of(ref, settings.shards)
    await store.record({shard: {ref.encode(): 2}})
    taken = await store.take(shard, "token-1")
    assert taken is not None and taken.deltas == {ref.encode(): 2}
    await store.record({shard: {ref.encode(): 5}})
    assert await deltas.hget(store.keys(shard).pending, ref.encode()) == "5"
    assert await store.peek(shard, ref.encode()) == (5, 2, "token-1")
    assert await store.finish(shard, "token-1")
    assert await store.peek(shard, ref.encode()) == (5, 0, None)

    await store.drop_all()
    assert await pending_keys(deltas, settings) == []


async def test_cluster_outage_applies_deltas_directly(
    db: None, settings: cc.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With the cluster unreachable, a save still counts: its delta goes straight to
    the database and a warning says so."""
    dead = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1")
    cc.configure(dead)
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.create(user=user, post=post)

    assert await counters_exact() == []
    assert "redis unreachable" in caplog.text
    cc.configure(settings)


async def test_cluster_many_parents_random_writes_count_exactly(worker: Worker) -> None:
    """Random creates, deletes and moves over twenty posts, concurrently, end with
    every counter equal to COUNT(*).

    A write that the database aborts as a deadlock victim is skipped: on MariaDB a
    child INSERT (shared locks on two parents) can deadlock with the worker's batch
    (exclusive locks on several parents); see docs/limitations.md.
    """
    rng = random.Random(6)
    users = [await User.create() for _ in range(4)]
    posts = [await Post.create(user=rng.choice(users)) for _ in range(20)]
    victims: list[OperationalError] = []

    async def write(mine: list[Comment]) -> None:
        roll = rng.random()
        if mine and roll < 0.2:
            await mine.pop(rng.randrange(len(mine))).delete()
        elif mine and roll < 0.35:
            moved = rng.choice(mine)
            moved.post = rng.choice(posts)
            await moved.save()
        else:
            mine.append(
                await Comment.create(user=rng.choice(users), post=rng.choice(posts))
            )

    async def actor() -> None:
        mine: list[Comment] = []
        for _ in range(25):
            try:
                await write(mine)
            except OperationalError as error:
                if "deadlock" not in str(error).lower():
                    raise
                victims.append(error)

    await asyncio.gather(*(actor() for _ in range(10)))
    await eventually(all_exact, timeout_s=30)
    assert len(victims) < 50


async def test_many_worker_processes_apply_every_delta_once(
    db: None, settings: cc.Settings, tmp_path: Path
) -> None:
    """Three worker processes on one queue, during a burst over forty posts, apply
    every delta exactly once: counters equal COUNT(*), each applied batch has one
    ledger row, and more than one process did the work."""
    environment = {
        "COUNTER_CACHE_REDIS_URL": settings.redis_url,
        "COUNTER_CACHE_REDIS_CLUSTER": "true",
        "COUNTER_CACHE_QUEUE_URL": settings.effective_queue_url,
        "COUNTER_CACHE_QUEUE": settings.queue,
        "COUNTER_CACHE_KEY_PREFIX": settings.key_prefix,
        "COUNTER_CACHE_SHARDS": str(settings.shards),
        "COUNTER_CACHE_BATCH_WINDOW_S": str(settings.batch_window_s),
        "COUNTER_CACHE_TEST_DB_URL": DB_URL,
    }
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    processes = [start_worker_process(environment, log) for log in logs]
    try:

        async def all_started() -> bool:
            return all("worker started" in log.read_text() for log in logs)

        await eventually(all_started, timeout_s=60)
        victims = await burst(posts=40, comments=600)
        await eventually(all_exact, timeout_s=60)
    finally:
        for process in processes:
            stop_worker_process(process)
    applied = [log.read_text().count("batch applied") for log in logs]
    assert await CounterLedger.all().count() == sum(applied)
    print(f"batches applied per worker process: {applied}")
    assert sum(1 for count in applied if count) >= 2, applied
    assert victims < 60


async def burst(posts: int, comments: int) -> int:
    """Create `comments` comments concurrently over `posts` posts, deleting one in
    ten; returns how many writes the database aborted as deadlock victims."""
    rng = random.Random(posts * comments)
    users = [await User.create() for _ in range(5)]
    parents = [await Post.create(user=rng.choice(users)) for _ in range(posts)]
    victims = 0

    async def one(index: int) -> None:
        nonlocal victims
        try:
            comment = await Comment.create(
                user=rng.choice(users), post=rng.choice(parents)
            )
            if index % 10 == 0:
                await comment.delete()
        except OperationalError as error:
            if "deadlock" not in str(error).lower():
                raise
            victims += 1

    for start in range(0, comments, 100):
        await asyncio.gather(*(one(i) for i in range(start, start + 100)))
    return victims
