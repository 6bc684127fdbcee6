"""Specification: the important log lines, as operators will grep for them: one
logger per module, a lowercase event phrase, then key=value pairs."""

from __future__ import annotations

import logging
import re
import socket

import pytest
from saq import Worker

import tortoise_counter_cache as cc
from tests.conftest import REDIS_URL, all_exact, eventually
from tests.models import Comment, Post, User
from tortoise_counter_cache import jobs
from tortoise_counter_cache.declaration import counter_ref
from tortoise_counter_cache.keys import shard_of
from tortoise_counter_cache.models import CounterOutbox
from tortoise_counter_cache.runtime import get_runtime

EVENT = re.compile(r"^[a-z][a-z ,]*( [a-z_]+=\S+)+$")


def lines(caplog: pytest.LogCaptureFixture, phrase: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(phrase)]


async def test_worker_logs_each_applied_batch(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """Each applied batch logs one INFO line from the jobs module with its shard,
    counters, statements and duration."""
    caplog.set_level(logging.INFO, logger="tortoise_counter_cache")
    user = await User.create()
    await Post.create(user=user)
    await eventually(all_exact)
    record = (await eventually(lambda: _async(lines(caplog, "batch applied"))))[0]
    assert record.name == "tortoise_counter_cache.jobs"
    assert record.levelno == logging.INFO
    assert re.fullmatch(
        r"batch applied shard=\d+ counters=1 statements=1 ms=\d+\.\d",
        record.getMessage(),
    )


async def test_fallback_logs_a_warning_per_save(
    db: None, settings: cc.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis refusing connections, the failure logs `redis unreachable` from the
    runtime module and the save logs `deltas applied directly` from recording."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cc.configure(settings, redis_url=f"redis://127.0.0.1:{port}/0")
    user = await User.create()
    await Comment.create(user=user)
    (down,) = lines(caplog, "redis unreachable, deltas bypass redis")
    assert (down.name, down.levelno) == ("tortoise_counter_cache.runtime", 30)
    direct = lines(caplog, "deltas applied directly")
    assert [r.getMessage() for r in direct] == ["deltas applied directly counters=1"]
    assert {r.name for r in direct} == {"tortoise_counter_cache.recording"}
    cc.configure(settings, redis_url=REDIS_URL)


async def test_dropped_outbox_copy_is_logged(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An outbox copy of a record call that did run is dropped with an INFO line
    naming the record id and shard."""
    caplog.set_level(logging.INFO, logger="tortoise_counter_cache")
    ref = counter_ref(User, "karma", 1)
    shard = shard_of(ref, get_runtime().settings.shards)
    await CounterOutbox.create(
        counter=ref.encode(), delta=1, record_id="r1", shard=shard
    )
    store = get_runtime().store
    await store.client.set(store.keys(shard).marker("r1"), "1")
    await jobs.drain_outbox()
    (record,) = lines(caplog, "outbox copy dropped")
    assert record.getMessage() == (
        f"outbox copy dropped, the record ran in redis record_id=r1 shard={shard}"
    )


async def test_every_library_line_is_an_event_phrase_with_pairs(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything the library logs during ordinary work reads `phrase key=value`."""
    caplog.set_level(logging.DEBUG, logger="tortoise_counter_cache")
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.create(user=user, post=post)
    await eventually(all_exact)
    ours = [r for r in caplog.records if r.name.startswith("tortoise_counter_cache.")]
    assert ours
    for record in ours:
        assert EVENT.match(record.getMessage()), record.getMessage()


async def _async(value: object) -> object:
    return value
