"""Specification: which writes change which counters, applied by a real worker."""

from __future__ import annotations

import contextlib

from saq import Worker
from tortoise.transactions import in_transaction

from tests.conftest import all_exact, eventually
from tests.models import Comment, Post, User


async def test_create_counts_each_parent_once(worker: Worker) -> None:
    """A created comment adds one to its post and one to its user."""
    user = await User.create(name="ann")
    post = await Post.create(user=user)
    await Comment.create(user=user, post=post)
    await Comment.create(user=user, post=post)

    await eventually(all_exact)
    await post.refresh_from_db()
    await user.refresh_from_db()
    assert (post.count_of_comments, user.comments_count, user.posts_count) == (2, 2, 1)


async def test_delete_counts_once_when_deleted_twice(worker: Worker) -> None:
    """Deleting the same row through two instances subtracts one, not two."""
    user = await User.create()
    post = await Post.create(user=user)
    comment = await Comment.create(user=user, post=post)
    other = await Comment.get(id=comment.id)
    await comment.delete()
    await other.delete()

    await eventually(all_exact)
    await post.refresh_from_db()
    assert post.count_of_comments == 0


async def test_move_by_object_and_by_id_moves_the_count(worker: Worker) -> None:
    """Changing a counted foreign key takes one from the old parent and gives one to
    the new, whether the object or the `<fk>_id` was set, and to NULL too."""
    user = await User.create()
    first, second = await Post.create(user=user), await Post.create(user=user)
    comment = await Comment.create(user=user, post=first)
    comment.post = second
    await comment.save()
    await eventually(all_exact)
    assert (await Post.get(id=second.id)).count_of_comments == 1

    loaded = await Comment.get(id=comment.id)
    loaded.post_id = first.id
    await loaded.save()
    await eventually(all_exact)
    assert (await Post.get(id=first.id)).count_of_comments == 1

    loaded.post_id = None
    await loaded.save()
    await eventually(all_exact)
    assert (await Post.get(id=first.id)).count_of_comments == 0


async def test_save_without_move_changes_nothing(worker: Worker, redis) -> None:
    """Saving a child whose keys did not change records no delta."""
    user = await User.create()
    post = await Post.create(user=user)
    comment = await Comment.create(user=user, post=post)
    await eventually(all_exact)
    comment.body = "edited"
    await comment.save()
    loaded = await Comment.get(id=comment.id)
    await loaded.save()
    assert await redis.keys(f"*{worker.queue.name}*pending") == []
    assert await all_exact()


async def test_parent_save_never_writes_counters_back(worker: Worker) -> None:
    """A parent loaded before its counter changed can be saved without resetting the
    counter to its stale in-memory value."""
    user = await User.create()
    post = await Post.create(user=user)
    stale = await Post.get(id=post.id)
    await Comment.create(user=user, post=post)
    await eventually(all_exact)
    stale.title = "renamed"
    await stale.save()
    fresh = await Post.get(id=post.id)
    assert (fresh.title, fresh.count_of_comments) == ("renamed", 1)


async def test_move_rolled_back_then_saved_again_is_written_and_counted(
    worker: Worker,
) -> None:
    """A move inside a transaction that rolled back is written and counted when the
    same instance is saved again outside it."""
    user = await User.create()
    first, second = await Post.create(user=user), await Post.create(user=user)
    comment = await Comment.create(user=user, post=first)
    comment.post = second
    with contextlib.suppress(RuntimeError):
        async with in_transaction():
            await comment.save()
            raise RuntimeError("roll back")
    await comment.save()

    await eventually(all_exact)
    assert (await Comment.get(id=comment.id)).post_id == second.id
    assert (await Post.get(id=second.id)).count_of_comments == 1
