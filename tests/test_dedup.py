"""Specification: one job per busy shard, a burst applied in a handful of UPDATEs,
and no delta stranded by a job that was already running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from saq import Worker
from tortoise import connections

from tests.conftest import BACKEND, all_exact, eventually
from tests.models import Comment, Post, User
from tortoise_counter_cache import jobs, runtime
from tortoise_counter_cache.store import Taken


async def parent_rows_changed() -> int:
    """Rows changed in the post and user tables of the test database, from
    MariaDB's per-table statistics (other databases on the server do not count). In
    the one-post burst every UPDATE changes exactly one parent row."""
    connection = connections.get("default")
    await connection.execute_query("SET GLOBAL userstat = 1")
    _, rows = await connection.execute_query(
        "SELECT COALESCE(SUM(ROWS_CHANGED), 0) AS n FROM "
        "information_schema.TABLE_STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('post', 'user')"
    )
    return int(rows[0]["n"])


async def test_delta_recorded_while_its_job_runs_is_applied_by_that_job(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delta that arrives after a running job took its batch queues no new job and
    is still applied: the running job finds it on its next take."""
    user = await User.create()
    post = await Post.create(user=user)
    await eventually(all_exact)

    took, release = asyncio.Event(), asyncio.Event()
    real_apply = jobs.apply_batch
    enqueued: list[int] = []
    real_enqueue = runtime.Runtime.enqueue_apply

    async def paused_apply(taken: Taken) -> Any:
        took.set()
        await release.wait()
        return await real_apply(taken)

    async def counting_enqueue(self: runtime.Runtime, shard: int) -> None:
        enqueued.append(shard)
        await real_enqueue(self, shard)

    monkeypatch.setattr(jobs, "apply_batch", paused_apply)
    monkeypatch.setattr(runtime.Runtime, "enqueue_apply", counting_enqueue)

    await Comment.create(user=user, post=post)
    await asyncio.wait_for(took.wait(), 10)
    jobs_before = len(enqueued)
    await Comment.create(user=user, post=post)  # arrives while the job is paused
    assert len(enqueued) == jobs_before, "a second job was queued for a busy shard"
    release.set()

    await eventually(all_exact)
    assert (await Post.get(id=post.id)).count_of_comments == 2


@pytest.mark.skipif(
    BACKEND != "mysql",
    reason="counts rows changed with MariaDB's TABLE_STATISTICS; the other "
    "backends run a burst in test_burst_is_exact",
)
async def test_burst_on_one_post_takes_a_handful_of_updates(worker: Worker) -> None:
    """1000 comments from 50 concurrent writers on one post end exact, with a few
    UPDATE statements on the parents instead of 2000."""
    user = await User.create()
    post = await Post.create(user=user)
    await eventually(all_exact)
    before = await parent_rows_changed()

    await burst(user, post, comments=1000, writers=50)
    await eventually(all_exact, timeout_s=20)

    updates = await parent_rows_changed() - before
    assert (await Post.get(id=post.id)).count_of_comments == 1000
    print(f"parent UPDATE statements: {updates}")
    # Two counters, post and user: at most 10 UPDATE statements each.
    assert updates <= 20, f"{updates} UPDATE statements for a 1000-comment burst"


async def test_burst_is_exact(worker: Worker) -> None:
    """A burst of 300 comments from 30 writers ends with exact counts."""
    user = await User.create()
    post = await Post.create(user=user)
    await burst(user, post, comments=300, writers=30)
    await eventually(all_exact, timeout_s=20)
    assert (await User.get(id=user.id)).comments_count == 300


async def burst(user: User, post: Post, comments: int, writers: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(comments):
        queue.put_nowait(number)

    async def writer() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            await Comment.create(user=user, post=post, body=str(number))

    await asyncio.gather(*(writer() for _ in range(writers)))
