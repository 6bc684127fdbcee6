"""Fault injection: counts stay exact through crashes, rollbacks, races, outages and
bad input (issue 3). Real Redis, a real database and real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from saq import Worker
from tortoise import Tortoise
from tortoise.transactions import in_transaction

import tortoise_counter_cache as cc
from tests.conftest import (
    BACKEND,
    DB_URL,
    REDIS_URL,
    all_exact,
    counters_exact,
    eventually,
    tortoise_config,
)
from tests.faults.procs import ROOT, PrivateRedis, WorkerProcess, free_port, worker_env
from tests.models import Comment, Post, User
from tortoise_counter_cache import jobs
from tortoise_counter_cache.apply import apply_deltas
from tortoise_counter_cache.declaration import counter_ref
from tortoise_counter_cache.keys import ShardKeys, shard_of
from tortoise_counter_cache.models import CounterLedger, CounterOutbox
from tortoise_counter_cache.runtime import APPLY_JOB, get_runtime
from tortoise_counter_cache.worker import build_settings


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest_asyncio.fixture
async def fast(settings: cc.Settings) -> AsyncIterator[cc.Settings]:
    """The test's settings with short leases and a reconciler every second, so an
    orphaned shard is picked up within seconds."""
    yield cc.configure(
        dataclasses.replace(
            settings,
            lease_ms=1000,
            reconcile_every_s=1,
            batch_window_s=0.02,
            redis_timeout_s=0.5,
            redis_retry_after_s=0.2,
            job_timeout_s=10,
        )
    )


@contextlib.asynccontextmanager
async def in_process_worker(settings: cc.Settings) -> AsyncIterator[Worker]:
    options = build_settings(settings, concurrency=8, dequeue_timeout=0.5)
    running = Worker(**options)
    task = asyncio.create_task(running.start())
    try:
        yield running
    finally:
        await running.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await options["queue"].disconnect()


async def apply_every_shard() -> None:
    """Run the apply job for every shard, in this process, as a worker would."""
    for shard in range(get_runtime().settings.shards):
        await jobs.apply_shard(None, shard=shard)


async def take_every_shard() -> list[tuple[int, Any]]:
    """Take the pending deltas of every shard in flight, as a job's first step."""
    store = get_runtime().store
    taken = []
    for shard in range(store.settings.shards):
        batch = await store.take(shard, f"token-{shard}-{random.random()}")
        if batch is not None:
            taken.append((shard, batch))
    return taken


async def shards_empty() -> bool:
    runtime = get_runtime()
    states = await runtime.store.inspect(range(runtime.settings.shards))
    outbox = await CounterOutbox.all().count()
    return not outbox and not any(s.pending or s.inflight for s in states)


async def burst(posts: list[Post], users: list[User], count: int) -> None:
    async def one(i: int) -> None:
        await Comment.create(user=users[i % len(users)], post=posts[i % len(posts)])

    for start in range(0, count, 20):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 20, count))))


# (a) worker crash ----------------------------------------------------------------


async def test_batch_applied_once_when_job_dies_after_take(db: None, fast) -> None:
    """A batch taken in flight by a job that then died is applied by the next job."""
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 10)
    assert await take_every_shard()  # ... and the job dies here

    await apply_every_shard()
    assert await counters_exact() == []
    assert await shards_empty()


async def test_batch_applied_once_when_job_dies_during_update(db: None, fast) -> None:
    """A job whose UPDATE transaction never committed (connection lost, process
    killed) leaves its batch to the next job, which applies it once."""
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 10)
    for _, taken in await take_every_shard():
        with contextlib.suppress(Boom):
            async with in_transaction() as connection:
                await CounterLedger.create(token=taken.token, using_db=connection)
                await apply_deltas(taken.deltas, connection)
                raise Boom  # the process dies before COMMIT

    await apply_every_shard()
    assert await counters_exact() == []
    assert await CounterLedger.all().count() >= 1


async def test_batch_not_reapplied_when_job_dies_after_commit(
    db: None, fast, caplog
) -> None:
    """A job killed after its UPDATE committed but before it cleared the batch does
    not get the batch applied twice: the ledger shows it was applied."""
    caplog.set_level(logging.INFO, logger="tortoise_counter_cache.jobs")
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 10)
    taken = await take_every_shard()
    for _, batch in taken:
        await jobs.apply_batch(batch)  # committed; the job dies before finish

    await apply_every_shard()
    assert await counters_exact() == []
    assert await shards_empty()
    skipped = [r for r in caplog.records if "batch already applied" in r.message]
    assert len(skipped) == len(taken)


async def test_counts_exact_when_worker_processes_are_killed_during_a_burst(
    db: None, fast, tmp_path: Path
) -> None:
    """Worker processes SIGKILLed again and again during a burst of saves lose no
    delta and apply none twice once a worker runs again."""
    users = [await User.create() for _ in range(3)]
    posts = [await Post.create(user=users[i % 3]) for i in range(6)]
    env = worker_env(fast, DB_URL)
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log") for i in range(2)]
    for worker in workers:
        worker.start()
    chooser = random.Random(3)

    async def kill_again_and_again() -> None:
        while True:
            await asyncio.sleep(chooser.uniform(0.1, 0.4))
            victim = chooser.choice(workers)
            victim.kill()
            victim.start()

    killer = asyncio.create_task(kill_again_and_again())
    try:
        for _ in range(6):
            await burst(posts, users, 40)
            await asyncio.sleep(0.1)
    finally:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    try:
        await eventually(shards_empty, timeout_s=30)
        assert await counters_exact() == []
        assert await Comment.all().count() == 240
        assert sum(w.kills for w in workers) >= 3
    finally:
        for worker in workers:
            worker.stop()


# (b) rollback -------------------------------------------------------------------


async def test_rolled_back_transaction_is_never_counted(worker: Worker) -> None:
    """Creates, deletes and moves inside a transaction that rolls back count
    nothing."""
    user = await User.create()
    first, second = await Post.create(user=user), await Post.create(user=user)
    kept = await Comment.create(user=user, post=first)
    with pytest.raises(Boom):
        async with in_transaction() as connection:
            await Comment.create(user=user, post=first, using_db=connection)
            loaded = await Comment.get(id=kept.id).using_db(connection)
            loaded.post = second
            await loaded.save(using_db=connection)
            await loaded.delete(using_db=connection)
            raise Boom

    await eventually(shards_empty)
    await eventually(all_exact)
    assert (await Post.get(id=first.id)).count_of_comments == 1
    assert (await User.get(id=user.id)).comments_count == 1


async def test_committed_transaction_is_counted_once(worker: Worker) -> None:
    """A child created inside a transaction that commits is counted exactly once."""
    user = await User.create()
    post = await Post.create(user=user)
    async with in_transaction() as connection:
        await Comment.create(user=user, post=post, using_db=connection)
        await cc.cache_and_enqueue(
            User, user.id, "karma", "increment", 5, using_db=connection
        )

    await eventually(shards_empty)
    fresh = await User.get(id=user.id)
    assert (fresh.comments_count, fresh.karma) == (1, 5)
    assert (await Post.get(id=post.id)).count_of_comments == 1


async def test_rolled_back_savepoint_is_not_counted_when_outer_commits(
    worker: Worker,
) -> None:
    """A nested transaction (a savepoint) that rolls back inside an outer one that
    commits counts what the database kept: the outer child, not the inner one."""
    user = await User.create()
    post = await Post.create(user=user)
    async with in_transaction() as outer:
        await Comment.create(user=user, post=post, body="outer", using_db=outer)
        with pytest.raises(Boom):
            async with in_transaction() as inner:
                await Comment.create(user=user, post=post, body="inner", using_db=inner)
                raise Boom

    await eventually(shards_empty)
    kept = await Comment.filter(post_id=post.id).values_list("body", flat=True)
    assert kept == ["outer"]
    assert await counters_exact() == []


# (c) double and concurrent deletes and moves ------------------------------------


async def test_concurrent_deletes_count_once(worker: Worker) -> None:
    """Two instances of each row deleted at the same time subtract one, not two."""
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 10)
    ids = await Comment.all().values_list("id", flat=True)
    pairs = [(await Comment.get(id=i), await Comment.get(id=i)) for i in ids[:8]]
    await asyncio.gather(*(c.delete() for pair in pairs for c in pair))

    await eventually(shards_empty)
    await eventually(all_exact)
    assert (await Post.get(id=post.id)).count_of_comments == 2


async def test_concurrent_moves_count_once(worker: Worker) -> None:
    """Two instances of one child moved at the same time to different parents leave
    every parent counting exactly the children it has."""
    user = await User.create()
    posts = [await Post.create(user=user) for _ in range(3)]
    await burst([posts[0]], [user], 10)
    ids = await Comment.all().values_list("id", flat=True)
    moves = []
    for i in ids:
        one, two = await Comment.get(id=i), await Comment.get(id=i)
        one.post, two.post = posts[1], posts[2]
        moves += [one.save(), two.save()]
    await asyncio.gather(*moves)

    await eventually(shards_empty)
    assert await counters_exact() == []
    counts = [(await Post.get(id=p.id)).count_of_comments for p in posts]
    assert counts[0] == 0 and sum(counts) == 10


async def test_delete_races_move_counted_once(worker: Worker) -> None:
    """A delete racing a move of the same child ends with the child counted nowhere
    if it is gone, or once under its new parent if the move won."""
    user = await User.create()
    first, second = await Post.create(user=user), await Post.create(user=user)
    await burst([first], [user], 10)
    races = []
    for i in await Comment.all().values_list("id", flat=True):
        mover, deleter = await Comment.get(id=i), await Comment.get(id=i)
        mover.post = second
        races += [mover.save(), deleter.delete()]
    await asyncio.gather(*races, return_exceptions=True)

    await eventually(shards_empty)
    assert await counters_exact() == []


# (d) Redis unreachable ----------------------------------------------------------


async def test_save_applies_directly_when_redis_refuses(db: None, fast, caplog) -> None:
    """With nothing listening on the Redis port, saves succeed quickly, their counts
    are applied straight to the database, and a WARNING says so."""
    cc.configure(
        dataclasses.replace(fast, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    )
    user = await User.create()
    post = await Post.create(user=user)
    started = time.monotonic()
    for _ in range(10):
        await Comment.create(user=user, post=post)
    elapsed = time.monotonic() - started

    assert elapsed < 5.0, f"10 saves took {elapsed:.1f}s with Redis down"
    assert await counters_exact() == []
    assert (await Post.get(id=post.id)).count_of_comments == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("redis unreachable" in r.getMessage() for r in warnings)


async def test_async_path_resumes_when_redis_comes_back(db: None, fast, caplog) -> None:
    """A save while the private Redis is stopped is applied directly; once Redis is
    back, saves go through Redis again without any call from the application."""
    server = PrivateRedis()
    server.start()
    try:
        settings = cc.configure(
            dataclasses.replace(fast, redis_url=server.url, queue_url=REDIS_URL)
        )
        user = await User.create()
        post = await Post.create(user=user)
        await Comment.create(user=user, post=post)
        assert (await Post.get(id=post.id)).count_of_comments == 0  # in Redis

        server.stop()
        started = time.monotonic()
        # The pooled connection dies under this save: whether Redis ran its call
        # is unknown, so its delta waits in the outbox under the call's record id.
        await Comment.create(user=user, post=post)
        # Redis is known to be down now: this one is applied directly.
        await Comment.create(user=user, post=post)
        assert time.monotonic() - started < 3.0
        held = await CounterOutbox.filter(record_id__isnull=False).count()
        applied = (await Post.get(id=post.id)).count_of_comments
        assert (held, applied) == (2, 1)  # post and user rows held; one applied
        assert any("redis unreachable" in r.getMessage() for r in caplog.records)

        server.start()
        await asyncio.sleep(settings.redis_retry_after_s + 0.1)
        await Comment.create(user=user, post=post)
        assert (await Post.get(id=post.id)).count_of_comments == 1  # in Redis again
        client = Redis.from_url(server.url)
        assert await client.keys(f"*{settings.key_prefix}*pending")
        await client.aclose()

        await apply_every_shard()
        await jobs.drain_outbox()  # the stopped Redis never ran it: applied now
        assert await counters_exact() == []
        assert (await Post.get(id=post.id)).count_of_comments == 4
    finally:
        await get_runtime().aclose()
        server.close()


# (e) database trouble during apply ----------------------------------------------


async def hold_row_lock(
    model: Any, pk: int, hold_s: float, locked: asyncio.Event
) -> None:
    async with in_transaction() as connection:
        await model.filter(id=pk).using_db(connection).select_for_update().first()
        locked.set()
        await asyncio.sleep(hold_s)


async def test_delta_applied_once_after_parent_row_lock_is_released(
    db: None, fast
) -> None:
    """An apply that waits on a parent row locked by another transaction applies its
    delta once the lock is released, exactly once."""
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 5)
    locked = asyncio.Event()
    holder = asyncio.create_task(hold_row_lock(Post, post.id, 1.0, locked))
    await locked.wait()
    await asyncio.gather(apply_every_shard(), holder)

    assert await counters_exact() == []
    assert await shards_empty()


@pytest.mark.skipif(BACKEND != "mysql", reason="innodb_lock_wait_timeout is MariaDB's")
async def test_delta_kept_and_retried_when_lock_wait_times_out(
    db: None, fast, caplog
) -> None:
    """A lock wait timeout during an apply keeps the batch and retries it with
    backoff until the lock is released; it is applied once."""
    caplog.set_level(logging.INFO)
    await Tortoise.close_connections()
    init = urllib.parse.quote("SET SESSION innodb_lock_wait_timeout=1")
    config = tortoise_config()
    config["connections"]["default"] = f"{DB_URL}?init_command={init}"
    await Tortoise.init(config=config)
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 5)
    locked = asyncio.Event()
    holder = asyncio.create_task(hold_row_lock(Post, post.id, 2.5, locked))
    await locked.wait()
    await asyncio.gather(apply_every_shard(), holder)

    assert await counters_exact() == []
    assert await shards_empty()
    retries = [r for r in caplog.records if r.getMessage() == "stamina.retry_scheduled"]
    assert retries, "the lock wait timeout was never hit"


async def test_delta_of_deleted_parent_dropped_once(db: None, fast, caplog) -> None:
    """A delta whose parent row was deleted before the apply is dropped once, with a
    warning, and the other counters of the batch are applied."""
    user = await User.create()
    doomed, kept = await Post.create(user=user), await Post.create(user=user)
    await burst([doomed, kept], [user], 6)
    await Comment.filter(post_id=doomed.id).delete()
    await Post.filter(id=doomed.id).delete()
    # The deleted comments and post bypassed the library: take them off by hand.
    await User.filter(id=user.id).update(comments_count=-3, posts_count=-1)

    await apply_every_shard()
    await apply_every_shard()
    dropped = [r for r in caplog.records if "parent missing" in r.getMessage()]
    assert len(dropped) == 1
    assert await counters_exact() == []
    assert (await Post.get(id=kept.id)).count_of_comments == 3


# (f) orphaned deltas ------------------------------------------------------------


async def record_without_job(post: Post, delta: int) -> None:
    """Record a delta in Redis and arm its shard, but lose the enqueue."""
    runtime = get_runtime()
    ref = counter_ref(Post, "count_of_comments", post.id)
    await runtime.store.record(
        {shard_of(ref, runtime.settings.shards): {ref.encode(): delta}}
    )


async def test_reconcile_schedules_delta_whose_job_was_lost(db: None, fast) -> None:
    """A delta whose apply job was never queued is scheduled by the reconciler once
    its shard's lease has lapsed, and applied."""
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.bulk_create([Comment(user=user, post=post) for _ in range(4)])
    await User.filter(id=user.id).update(comments_count=4)
    await record_without_job(post, 4)
    await asyncio.sleep(fast.lease_ms / 1000 + 0.2)

    report = await jobs.reconcile(None)
    assert report["scheduled"] >= 1
    async with in_process_worker(fast):
        await eventually(all_exact)
    assert (await Post.get(id=post.id)).count_of_comments == 4


async def test_reconcile_schedules_delta_older_than_bound(db: None, fast) -> None:
    """A delta older than `max_delta_age_s` is scheduled even while its lease looks
    held (the job that holds it may be stuck)."""
    cc.configure(dataclasses.replace(fast, lease_ms=60_000, max_delta_age_s=0.2))
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.bulk_create([Comment(user=user, post=post) for _ in range(2)])
    await User.filter(id=user.id).update(comments_count=2)
    await record_without_job(post, 2)
    await asyncio.sleep(0.3)

    assert (await jobs.reconcile(None))["scheduled"] >= 1
    async with in_process_worker(fast):
        await eventually(all_exact)


async def test_reconcile_resumes_batch_left_in_flight(db: None, fast) -> None:
    """A batch left in flight by a job that died, with its lease lapsed, is found by
    the reconciler and applied once."""
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.bulk_create([Comment(user=user, post=post) for _ in range(3)])
    await User.filter(id=user.id).update(comments_count=3)
    await record_without_job(post, 3)
    assert await take_every_shard()
    await asyncio.sleep(fast.lease_ms / 1000 + 0.2)

    assert (await jobs.reconcile(None))["scheduled"] >= 1
    async with in_process_worker(fast):
        await eventually(shards_empty)
    assert await counters_exact() == []
    assert (await Post.get(id=post.id)).count_of_comments == 3


# (g) bad input in the job payload -----------------------------------------------


@pytest.mark.parametrize("shard", [99, -1, "0", None, True, 2.0])
async def test_apply_job_dropped_when_shard_is_bad(
    db: None, fast, shard, caplog
) -> None:
    """An apply job for a shard that is out of range or not an int is logged and
    dropped."""
    assert await jobs.apply_shard(None, shard=shard) == {"batches": 0, "statements": 0}
    assert any("job dropped" in r.getMessage() for r in caplog.records)


async def test_bad_counters_in_redis_dropped_and_good_ones_applied(
    db: None, fast, redis, caplog
) -> None:
    """Fields in a shard that name no registered model, no integer column, are not
    JSON, or hold a non-integer or huge delta are logged and dropped; the valid
    counters of the same batch are applied and the shard empties."""
    user = await User.create()
    post = await Post.create(user=user)
    good = counter_ref(Post, "count_of_comments", post.id)
    shard = shard_of(good, fast.shards)
    await Comment.bulk_create([Comment(user=user, post=post) for _ in range(2)])
    await User.filter(id=user.id).update(comments_count=2)
    await redis.hset(
        ShardKeys(fast.key_prefix, shard).pending,
        mapping={
            good.encode(): 2,
            json.dumps(["nope.Missing", "count", 1]): 5,
            json.dumps(["models.Post", "title", post.id]): 5,
            json.dumps(["models.Post", "count_of_comments", post.id, "nope"]): 5,
            "not json": 1,
            json.dumps(["models.User", "karma", user.id]): "abc",
            json.dumps(["models.User", "posts_count", 10**9]): str(2**63 - 1),
        },
    )

    await apply_every_shard()
    assert await shards_empty()
    assert await counters_exact() == []
    fresh = await User.get(id=user.id)
    assert (fresh.karma, fresh.posts_count) == (0, 1)
    dropped = [r for r in caplog.records if "delta dropped" in r.getMessage()]
    assert len(dropped) == 6


async def test_worker_survives_bad_job_payloads(worker: Worker) -> None:
    """Apply jobs with a missing, wrong-typed or out-of-range shard do not stop the
    worker from applying the next real deltas."""
    queue = worker.queue
    for kwargs in ({}, {"shard": "x"}, {"shard": 10**9}, {"shard": [1]}):
        await queue.enqueue(APPLY_JOB, timeout=5, retries=1, **kwargs)
    user = await User.create()
    post = await Post.create(user=user)
    await burst([post], [user], 5)

    await eventually(all_exact)
    assert (await Post.get(id=post.id)).count_of_comments == 5


# the randomised driver ----------------------------------------------------------


DRIVER_FAST = ("--seconds", "4", "--writers", "8", "--parents", "6", "--workers", "2")
DRIVER_LONG = (
    "--seconds",
    "120",
    "--writers",
    "24",
    "--parents",
    "40",
    "--workers",
    "3",
)


def run_driver(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "faults.json"
    command = [
        sys.executable,
        "benchmarks/faults.py",
        "--db",
        DB_URL,
        "--json",
        str(report),
        *args,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=600)
    if not report.exists():
        raise AssertionError(f"the driver failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(report.read_text())


async def test_random_faults_leave_every_counter_exact(tmp_path: Path) -> None:
    """A few seconds of random writes, rollbacks and races while worker processes
    are SIGKILLed end with every counter equal to COUNT(*)."""
    report = await asyncio.to_thread(
        run_driver, tmp_path, *DRIVER_FAST, "--faults", "kill_worker"
    )
    assert report["counters_wrong"] == 0, report["wrong"]
    assert report["counters_checked"] > 0
    assert sum(report["operations"].values()) > 50
    assert report["faults"].get("kill_worker", 0) >= 2


@pytest.mark.slow
async def test_random_faults_long_run_leaves_every_counter_exact(
    tmp_path: Path,
) -> None:
    """Two minutes of random writes with three worker processes SIGKILLed at random
    end exact."""
    report = await asyncio.to_thread(
        run_driver, tmp_path, *DRIVER_LONG, "--faults", "kill_worker"
    )
    assert report["counters_wrong"] == 0, report["wrong"]


@pytest.mark.slow
async def test_random_redis_faults_leave_every_counter_exact(tmp_path: Path) -> None:
    """Two minutes of random writes while every Redis connection is killed and the
    server restarted at random end exact."""
    report = await asyncio.to_thread(
        run_driver, tmp_path, *DRIVER_LONG, "--faults", "client_kill,redis_restart"
    )
    assert report["counters_wrong"] == 0, report["wrong"]


_BUSY_S = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1]) then
    return 1
  end
end
"""


async def test_save_counted_once_when_redis_times_out_but_runs_the_record(
    db: None, fast
) -> None:
    """A save whose Redis call timed out (a slow Redis, not a dead one) is counted
    once, even though Redis runs the queued call after the client gave up."""
    server = PrivateRedis()
    server.start()
    try:
        cc.configure(
            dataclasses.replace(
                fast, redis_url=server.url, queue_url=REDIS_URL, redis_timeout_s=0.3
            )
        )
        user = await User.create()
        post = await Post.create(user=user)
        await apply_every_shard()
        busy = Redis.from_url(server.url)
        blocker = asyncio.create_task(busy.eval(_BUSY_S, 0, 1_500_000))
        await asyncio.sleep(0.1)  # the server is now inside the busy script
        # Both the call and its resend time out: the deltas go to the outbox
        # under the call's record id.
        await Comment.create(user=user, post=post)
        assert await CounterOutbox.filter(record_id__isnull=False).count() == 2
        await blocker  # now Redis runs the queued call, once
        await busy.aclose()
        await get_runtime().aclose()
        cc.configure(
            dataclasses.replace(fast, redis_url=server.url, queue_url=REDIS_URL)
        )
        await apply_every_shard()
        assert await jobs.drain_outbox() == 2  # consumed, and dropped: Redis had it

        assert await counters_exact() == []
        assert await CounterOutbox.all().count() == 0
    finally:
        server.close()
