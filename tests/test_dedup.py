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


async def com_update() -> int:
    """MariaDB's global count of UPDATE statements."""
    _, rows = await connections.get("default").execute_query(
        "SHOW GLOBAL STATUS LIKE 'Com_update'"
    )
    return int(rows[0]["Value"])


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
    reason="Com_update is MariaDB's counter; the "
    "other backends run the same burst in test_burst_is_exact",
)
async def test_burst_on_one_post_takes_a_handful_of_updates(worker: Worker) -> None:
    """1000 comments from 50 concurrent writers on one post end exact, with a few
    UPDATE statements on the parents instead of 2000."""
    user = await User.create()
    post = await Post.create(user=user)
    await eventually(all_exact)
    before = await com_update()

    await burst(user, post, comments=1000, writers=50)
    await eventually(all_exact, timeout_s=20)

    updates = await com_update() - before
    assert (await Post.get(id=post.id)).count_of_comments == 1000
    # Two counters (post and user); allow up to 10 UPDATEs each, plus a little room
    # for other sessions on the same server.
    assert updates <= 25, f"{updates} UPDATE statements for a 1000-comment burst"


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
