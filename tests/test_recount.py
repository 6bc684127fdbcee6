"""Specification of `recount()` and `flush()`: drift repaired, nothing counted twice,
exact under live writes and a running worker."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from saq import Worker
from tortoise import Tortoise
from tortoise.transactions import in_transaction

import tortoise_counter_cache as cc
from tests.conftest import all_exact, counters_exact, eventually
from tests.models import Comment, Post, User
from tortoise_counter_cache.jobs import apply_batch
from tortoise_counter_cache.keys import shard_of
from tortoise_counter_cache.recount import counter_spec
from tortoise_counter_cache.runtime import get_runtime

COUNTERS = [
    (Post, "count_of_comments"),
    (User, "comments_count"),
    (User, "posts_count"),
]


async def recount_all(**options: Any) -> list[cc.RecountReport]:
    return [await cc.recount(model, column, **options) for model, column in COUNTERS]


async def make_posts(count: int) -> tuple[User, list[Post]]:
    user = await User.create(name="ann")
    return user, [await Post.create(user=user) for _ in range(count)]


async def test_recount_repairs_drift_when_writes_bypass_counting(db: None) -> None:
    """bulk_create, QuerySet.update, QuerySet.delete and raw SQL leave counters wrong;
    recount makes them exact and reports what it changed."""
    user, (first, second, third) = await make_posts(3)
    await cc.flush()
    await Comment.bulk_create([Comment(user=user, post=first) for _ in range(5)])
    moved = await Comment.filter(post=first).limit(2).values_list("id", flat=True)
    await Comment.filter(id__in=moved).update(post_id=second.id)
    await Comment.filter(id=moved[0]).delete()
    table = Post._meta.db_table
    await Tortoise.get_connection("default").execute_query(
        f"UPDATE {table} SET count_of_comments = 42 WHERE id = {third.id}"
    )
    assert await counters_exact()

    report = await cc.recount(Post, "count_of_comments", settle_s=0)
    await cc.recount("models.User", "comments_count", settle_s=0)

    assert await counters_exact() == []
    assert (report.model, report.rows_checked, report.rows_repaired) == (
        "models.Post",
        3,
        3,
    )
    assert report.total_drift == 3 + 1 + 42
    assert {(d.pk, d.old, d.new) for d in report.drifts} == {
        (first.id, 0, 3),
        (second.id, 0, 1),
        (third.id, 42, 0),
    }


async def test_recount_counts_no_pending_delta_twice(db: None) -> None:
    """Deltas still pending in Redis, in flight (applied or not) or in the outbox are
    left for the worker, so a flush after the recount makes every counter exact."""
    user, posts = await make_posts(8)
    for post in posts:
        await Comment.create(user=user, post=post)
    store, shards = get_runtime().store, get_runtime().settings.shards
    spec = counter_spec(Post, "count_of_comments")
    by_shard = {shard_of(spec.ref(post.id), shards): post for post in posts}
    assert len(by_shard) >= 2
    applied_shard, open_shard = list(by_shard)[:2]
    taken = await store.take(applied_shard, "applied-not-finished")
    assert taken is not None
    await apply_batch(taken)  # in the ledger, still in flight in Redis
    assert await store.take(open_shard, "taken-not-applied") is not None
    for post in posts:
        await Comment.create(user=user, post=post)
    async with in_transaction() as connection:
        await Comment.create(user=user, post=posts[0], using_db=connection)

    reports = await recount_all(settle_s=0)
    assert [r.rows_repaired for r in reports] == [0, 0, 0]
    await cc.flush()
    assert await counters_exact() == []


async def test_recount_stays_exact_during_live_writes(worker: Worker) -> None:
    """Creates and deletes that run while a worker applies and recount repairs leave
    every counter equal to COUNT(*)."""
    user, posts = await make_posts(4)
    await Comment.bulk_create([Comment(user=user, post=posts[0]) for _ in range(3)])
    stop = asyncio.Event()

    async def write(seed: int) -> int:
        rng, done = random.Random(seed), 0
        while not stop.is_set():
            post = rng.choice(posts)
            if rng.random() < 0.6:
                await Comment.create(user=user, post=post)
            elif comment := await Comment.filter(post=post).first():
                await comment.delete()
            done += 1
        return done

    writers = [asyncio.create_task(write(seed)) for seed in range(4)]
    for _ in range(2):
        report = await cc.recount(Post, "count_of_comments", batch_rows=2, settle_s=0.5)
        assert report.rows_checked == 4
        await cc.recount(User, "comments_count", settle_s=0.5)
    stop.set()
    operations = sum(await asyncio.gather(*writers))
    assert operations > 0
    try:
        await eventually(all_exact, timeout_s=20)
    except AssertionError:
        raise AssertionError(await counters_exact()) from None


async def test_recount_reports_progress_per_batch(db: None) -> None:
    """The progress callback gets (rows checked, rows total) after every batch."""
    await make_posts(5)
    calls: list[tuple[int, int]] = []
    await cc.recount(
        Post,
        "count_of_comments",
        batch_rows=2,
        settle_s=0,
        progress=lambda *a: calls.append(a),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]


async def test_recount_only_given_pks(db: None) -> None:
    """With pks, only those parents are checked and repaired."""
    user, (first, second) = await make_posts(2)
    await Comment.bulk_create([Comment(user=user, post=p) for p in (first, second)])
    report = await cc.recount(Post, "count_of_comments", pks=[second.id], settle_s=0)
    assert (report.rows_checked, report.rows_repaired) == (1, 1)
    assert (await Post.get(id=first.id)).count_of_comments == 0
    assert (await Post.get(id=second.id)).count_of_comments == 1


@pytest.mark.parametrize(
    ("model", "column", "message"),
    [
        (Post, "title", "counted columns are: count_of_comments"),
        (User, "karma", "counted columns are: comments_count, posts_count"),
        (Comment, "id", "counted columns are: none"),
        ("models.Nope", "x", "No registered model 'models.Nope'"),
        (42, "x", "needs a Tortoise model class"),
    ],
)
async def test_recount_rejects_unknown_counter(
    db: None, model: Any, column: str, message: str
) -> None:
    """A model or column that holds no foreign-key counter is named in the error,
    with the valid counted columns."""
    with pytest.raises(cc.UnknownCounterError, match=message):
        await cc.recount(model, column)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_rows": 0}, "batch_rows must be a positive integer, got 0"),
        ({"batch_rows": "10"}, "batch_rows must be a positive integer, got '10'"),
        ({"batch_rows": True}, "batch_rows must be a positive integer, got True"),
        ({"pks": 3}, "pks must be a list of primary keys or None"),
        ({"pks": [1, None]}, "pks must hold ints or strs, got None"),
        ({"settle_s": -1}, "settle_s must be a number of seconds, 0 or more"),
        ({"progress": "bar"}, "progress must be a callable"),
    ],
)
async def test_recount_rejects_bad_arguments(
    db: None, options: dict[str, Any], message: str
) -> None:
    """Unusable arguments raise InvalidDeltaError saying what to pass instead."""
    with pytest.raises(cc.InvalidDeltaError, match=message):
        await cc.recount(Post, "count_of_comments", **options)


async def test_recount_fails_clearly_when_redis_is_down(db: None) -> None:
    """Without Redis the pending deltas are unknown, so recount refuses to run."""
    cc.configure(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(cc.BackendUnavailableError, match="needs Redis"):
        await cc.recount(Post, "count_of_comments")


async def test_flush_applies_redis_and_outbox_deltas_without_worker(db: None) -> None:
    """flush() applies the deltas saves put in Redis and in the outbox."""
    user, posts = await make_posts(3)
    for post in posts:
        await Comment.create(user=user, post=post)
    async with in_transaction() as connection:
        await Comment.create(user=user, post=posts[0], using_db=connection)
    assert await counters_exact()

    report = await cc.flush()

    assert await counters_exact() == []
    assert report.outbox_rows == 2  # one row per counter: the post and the user
    assert report.shards >= 1 and report.batches >= report.shards
    assert (await cc.flush()).batches == 0


async def test_flush_is_exact_while_a_worker_runs(worker: Worker) -> None:
    """flush() racing the worker for the same shards applies every delta once, and
    every delta recorded before it is applied when it returns."""
    user, posts = await make_posts(5)
    for _ in range(4):
        await asyncio.gather(
            *(Comment.create(user=user, post=random.choice(posts)) for _ in range(20))
        )
        await cc.flush()
        assert await counters_exact() == []


async def test_flush_fails_clearly_when_redis_is_down(db: None) -> None:
    """Without Redis, flush() raises BackendUnavailableError naming the setting."""
    cc.configure(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(cc.BackendUnavailableError, match="could not reach Redis"):
        await cc.flush()
