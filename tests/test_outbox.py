"""Specification: deltas left in the outbox by a Redis call of unknown outcome are
applied exactly when that call did not run."""

from __future__ import annotations

from tests.conftest import all_exact
from tests.models import Comment, Post, User
from tortoise_counter_cache import jobs, recount
from tortoise_counter_cache.declaration import counter_ref
from tortoise_counter_cache.keys import shard_of
from tortoise_counter_cache.models import CounterOutbox
from tortoise_counter_cache.recording import set_inline
from tortoise_counter_cache.runtime import get_runtime


async def uncounted_comment(record_id: str) -> tuple[Post, int]:
    """A comment row whose post delta sits in the outbox under `record_id`, as a
    save leaves it when its Redis call failed after it may have run."""
    previous = set_inline(True)
    try:
        user = await User.create()
        post = await Post.create(user=user)
        await Comment.create(user=user, post=None)
    finally:
        set_inline(previous)
    await Comment.filter(post_id=None).update(post_id=post.id)
    ref = counter_ref(Post, "count_of_comments", post.id)
    shard = shard_of(ref, get_runtime().settings.shards)
    await CounterOutbox.create(
        counter=ref.encode(), delta=1, record_id=record_id, shard=shard
    )
    return post, shard


async def test_outbox_copy_is_applied_when_the_record_call_never_ran(
    db: None,
) -> None:
    """With no trace of the record id in Redis, the worker claims it and applies
    the outbox copy."""
    post, _ = await uncounted_comment("never-ran")
    assert await jobs.drain_outbox() == 1
    assert (await Post.get(id=post.id)).count_of_comments == 1
    assert await all_exact()


async def test_outbox_copy_is_dropped_when_the_record_call_ran(db: None) -> None:
    """When Redis shows the record call ran, its delta is in Redis already, so the
    outbox copy is dropped instead of applied a second time."""
    post, shard = await uncounted_comment("did-run")
    store = get_runtime().store
    await store.client.set(store.keys(shard).marker("did-run"), "1")
    assert await jobs.drain_outbox() == 1
    assert (await Post.get(id=post.id)).count_of_comments == 0
    assert await CounterOutbox.all().count() == 0


async def test_a_late_record_call_is_ignored_once_the_outbox_claimed_it(
    db: None,
) -> None:
    """After the worker claimed a record id, the call with that id does nothing if
    it runs at last: the delta is counted by the outbox only."""
    post, shard = await uncounted_comment("late")
    assert await jobs.drain_outbox() == 1
    ref = counter_ref(Post, "count_of_comments", post.id)
    await get_runtime().store.record({shard: {ref.encode(): 1}}, "late")
    for number in range(get_runtime().settings.shards):
        await jobs.apply_shard(None, shard=number)
    assert (await Post.get(id=post.id)).count_of_comments == 1


async def test_recount_ignores_outbox_copies_of_a_call_that_ran(db: None) -> None:
    """Recount does not subtract an outbox copy that the worker will drop because
    its record call ran: after recount, the apply and the drain, the count is
    exact."""
    post, shard = await uncounted_comment("ran")
    ref = counter_ref(Post, "count_of_comments", post.id)
    await get_runtime().store.record({shard: {ref.encode(): 1}}, "ran")
    await recount(Post, "count_of_comments", settle_s=0)
    for number in range(get_runtime().settings.shards):
        await jobs.apply_shard(None, shard=number)
    await jobs.drain_outbox()
    assert (await Post.get(id=post.id)).count_of_comments == 1
