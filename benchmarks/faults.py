"""Randomised fault injection: many writers, killed workers, dropped Redis connections.

    python benchmarks/faults.py --seconds 180 --writers 24 --parents 40 --workers 3

Concurrent writers run a random mix of creates, deletes, moves (alone and racing
each other), committed and rolled-back transactions (with savepoints) and
`cache_and_enqueue` calls on `User.karma`, while a fault loop SIGKILLs and restarts
worker processes, kills every Redis client connection (`CLIENT KILL TYPE normal`) and
restarts the private redis-server. Then it waits until every shard and the outbox
are empty and compares every counter with `COUNT(*)` (and `karma` with the sum the
driver tracked). It exits with status 1 if any counter is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_db import open_database  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from tortoise import Tortoise  # noqa: E402
from tortoise.functions import Count  # noqa: E402
from tortoise.transactions import in_transaction  # noqa: E402

import tortoise_counter_cache as cc  # noqa: E402
from tests.faults.procs import PrivateRedis, WorkerProcess, worker_env  # noqa: E402
from tests.models import Comment, Post, User  # noqa: E402
from tortoise_counter_cache.models import CounterLedger, CounterOutbox  # noqa: E402
from tortoise_counter_cache.runtime import close_runtime, get_runtime  # noqa: E402

logger = logging.getLogger("faults")

OPERATIONS = {
    "create": 30,
    "delete": 10,
    "double_delete": 5,
    "move": 12,
    "racing_moves": 5,
    "move_vs_delete": 3,
    "tx_commit": 8,
    "tx_rollback": 8,
    "savepoint_rollback": 4,
    "karma": 12,
    "create_post": 2,
    "delete_post": 1,
}
FAULTS = {"kill_worker": 5, "client_kill": 3, "redis_restart": 1}


class Rollback(Exception):
    """Raised by a writer to roll its transaction back on purpose."""


@dataclass
class Run:
    """What the driver did and what it expects."""

    rng: random.Random
    users: list[int]
    posts: list[int]
    comments: list[int] = field(default_factory=list)
    karma: dict[int, int] = field(default_factory=dict)
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def user(self) -> int:
        return self.rng.choice(self.users)

    def post(self) -> int | None:
        return self.rng.choice(self.posts) if self.posts else None

    def comment(self) -> int | None:
        return self.rng.choice(self.comments) if self.comments else None


async def create(run: Run, db: Any = None) -> None:
    post = run.post() if run.rng.random() < 0.9 else None
    comment = await Comment.create(user_id=run.user(), post_id=post, using_db=db)
    run.comments.append(comment.id)


async def delete(run: Run) -> None:
    pk = run.comment()
    comment = await Comment.get_or_none(id=pk) if pk else None
    if comment is not None:
        await comment.delete()


async def double_delete(run: Run) -> None:
    pk = run.comment()
    one, two = await Comment.get_or_none(id=pk), await Comment.get_or_none(id=pk)
    if one is not None and two is not None:
        await asyncio.gather(one.delete(), two.delete())


async def move(run: Run, db: Any = None) -> None:
    pk = run.comment()
    comment = await Comment.get_or_none(id=pk).using_db(db) if pk else None
    if comment is not None:
        comment.post_id = run.post()
        await comment.save(using_db=db)


async def racing_moves(run: Run) -> None:
    pk = run.comment()
    one, two = await Comment.get_or_none(id=pk), await Comment.get_or_none(id=pk)
    if one is not None and two is not None:
        one.post_id, two.post_id = run.post(), run.post()
        await asyncio.gather(one.save(), two.save())


async def move_vs_delete(run: Run) -> None:
    pk = run.comment()
    one, two = await Comment.get_or_none(id=pk), await Comment.get_or_none(id=pk)
    if one is not None and two is not None:
        one.post_id = run.post()
        await asyncio.gather(one.save(), two.delete())


async def karma(run: Run, db: Any = None) -> tuple[int, int]:
    user, by = run.user(), run.rng.randint(1, 5)
    direction = run.rng.choice(["increment", "decrement"])
    await cc.cache_and_enqueue(User, user, "karma", direction, by, using_db=db)
    return user, by if direction == "increment" else -by


async def transaction(run: Run, *, commit: bool) -> None:
    changes = []
    with contextlib.suppress(Rollback):
        async with in_transaction() as db:
            for _ in range(run.rng.randint(1, 3)):
                await create(run, db)
            await move(run, db)
            changes.append(await karma(run, db))
            if not commit:
                raise Rollback
        for user, delta in changes:
            run.karma[user] = run.karma.get(user, 0) + delta


async def savepoint_rollback(run: Run) -> None:
    async with in_transaction() as outer:
        await create(run, outer)
        user, delta = await karma(run, outer)
        with contextlib.suppress(Rollback):
            async with in_transaction() as inner:
                await create(run, inner)
                await karma(run, inner)
                raise Rollback
    run.karma[user] = run.karma.get(user, 0) + delta


async def operate(run: Run, kind: str) -> None:
    if kind == "create":
        await create(run)
    elif kind == "delete":
        await delete(run)
    elif kind == "double_delete":
        await double_delete(run)
    elif kind == "move":
        await move(run)
    elif kind == "racing_moves":
        await racing_moves(run)
    elif kind == "move_vs_delete":
        await move_vs_delete(run)
    elif kind in ("tx_commit", "tx_rollback"):
        await transaction(run, commit=kind == "tx_commit")
    elif kind == "savepoint_rollback":
        await savepoint_rollback(run)
    elif kind == "karma":
        user, delta = await karma(run)
        run.karma[user] = run.karma.get(user, 0) + delta
    elif kind == "create_post":
        run.posts.append((await Post.create(user_id=run.user())).id)
    elif kind == "delete_post" and len(run.posts) > 3:
        pk = run.posts.pop(run.rng.randrange(len(run.posts)))
        post = await Post.get_or_none(id=pk)
        if post is not None:
            await post.delete()


async def writer(run: Run, until: float) -> None:
    kinds, weights = list(OPERATIONS), list(OPERATIONS.values())
    while time.monotonic() < until:
        kind = run.rng.choices(kinds, weights)[0]
        try:
            await operate(run, kind)
            run.operations[kind] += 1
        except Exception as error:  # a lost race (FK to a deleted post) and the like
            run.errors[f"{kind}:{type(error).__name__}"] += 1
            logger.debug("operation failed kind=%s error=%r", kind, error)


@dataclass
class Faults:
    """Breaks workers and Redis at random moments."""

    run: Run
    workers: list[WorkerProcess]
    server: PrivateRedis

    kinds: list[str]

    async def loop(self, until: float) -> None:
        if not self.kinds:
            return
        weights = [FAULTS[kind] for kind in self.kinds]
        kinds = self.kinds
        while time.monotonic() < until:
            await asyncio.sleep(self.run.rng.uniform(0.2, 1.0))
            kind = self.run.rng.choices(kinds, weights)[0]
            try:
                await getattr(self, kind)()
            except Exception:  # e.g. CLIENT KILL while the server restarts
                self.run.faults[f"{kind}_failed"] += 1
            else:
                self.run.faults[kind] += 1

    async def kill_worker(self) -> None:
        victim = self.run.rng.choice(self.workers)
        victim.kill()
        await asyncio.sleep(self.run.rng.uniform(0, 0.5))
        victim.start()

    async def client_kill(self) -> None:
        admin = Redis.from_url(self.server.url)
        try:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        finally:
            await admin.aclose()

    async def redis_restart(self) -> None:
        await asyncio.to_thread(self.server.restart)

    def revive(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                worker.start()


async def quiescent() -> bool:
    runtime = get_runtime()
    try:
        states = await runtime.store.inspect(range(runtime.settings.shards))
    except Exception:  # Redis still restarting
        return False
    if any(s.pending or s.inflight for s in states):
        return False
    return not await CounterOutbox.all().count()


async def wait_quiescent(faults: Faults, timeout_s: float) -> float:
    started = time.monotonic()
    while not await quiescent():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"deltas still pending after {timeout_s:.0f}s")
        faults.revive()
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def wrong_counters(run: Run) -> tuple[int, list[str]]:
    """Compare every counter with COUNT(*) (and karma with the tracked sum)."""

    async def counts(model: Any, key: str) -> dict[int, int]:
        rows = (
            await model.filter(**{f"{key}__isnull": False})
            .annotate(n=Count("id"))
            .group_by(key)
            .values_list(key, "n")
        )
        return {int(k): int(n) for k, n in rows}

    by_user = await counts(Comment, "user_id")
    by_post = await counts(Comment, "post_id")
    posts_by_user = await counts(Post, "user_id")
    checked, wrong = 0, []
    for pk, comments, posts, karma_ in await User.all().values_list(
        "id", "comments_count", "posts_count", "karma"
    ):
        expected = (by_user.get(pk, 0), posts_by_user.get(pk, 0), run.karma.get(pk, 0))
        checked += 3
        if (comments, posts, karma_) != expected:
            wrong.append(f"user {pk}: {(comments, posts, karma_)} != {expected}")
    for pk, comments in await Post.all().values_list("id", "count_of_comments"):
        checked += 1
        if comments != by_post.get(pk, 0):
            wrong.append(f"post {pk}: {comments} != {by_post.get(pk, 0)}")
    return checked, wrong


class WarningCount(logging.Handler):
    """Counts the library's warnings by event phrase."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        event = " ".join(w for w in str(record.msg).split() if "=" not in w)
        self.messages[event] += 1


async def prepare(db_url: str, parents: int, rng: random.Random) -> Run:
    config = {
        "connections": {"default": db_url},
        "apps": {
            "models": {
                "models": ["tests.models", "tortoise_counter_cache.models"],
                "default_connection": "default",
            }
        },
    }
    await open_database(config)
    async with in_transaction() as db:
        for model in (Comment, Post, User, CounterOutbox, CounterLedger):
            await model.all().using_db(db).delete()
    users = [(await User.create()).id for _ in range(parents)]
    posts = [(await Post.create(user_id=rng.choice(users))).id for _ in range(parents)]
    return Run(rng, users, posts)


async def drive(
    seconds: float,
    writers: int,
    parents: int,
    workers: int,
    seed: int,
    db_url: str,
    kinds: list[str],
) -> dict[str, Any]:
    rng = random.Random(seed)
    server = PrivateRedis()
    server.start()
    name = f"faults{uuid.uuid4().hex[:8]}"
    settings = cc.configure(
        redis_url=server.url,
        queue=name,
        key_prefix=name,
        shards=16,
        lease_ms=1500,
        batch_window_s=0.02,
        redis_timeout_s=0.5,
        redis_retry_after_s=0.3,
        max_delta_age_s=10,
        reconcile_every_s=1,
        outbox_poll_s=0.1,
        job_timeout_s=10,
    )
    logs = Path(tempfile.mkdtemp("-faults"))
    env = worker_env(settings, db_url)
    processes = [WorkerProcess(env, logs / f"worker{i}.log") for i in range(workers)]
    warnings = WarningCount()
    library = logging.getLogger("tortoise_counter_cache")
    library.addHandler(warnings)
    library.setLevel(logging.WARNING)
    library.propagate = False  # counted, not printed
    try:
        run = await prepare(db_url, parents, rng)
        for process in processes:
            process.start()
        faults = Faults(run, processes, server, kinds)
        until = time.monotonic() + seconds
        await asyncio.gather(
            faults.loop(until), *(writer(run, until) for _ in range(writers))
        )
        faults.revive()
        quiesce_s = await wait_quiescent(faults, timeout_s=240)
        checked, wrong = await wrong_counters(run)
    finally:
        for process in processes:
            process.stop()
        with contextlib.suppress(Exception):  # a connection killed by a fault
            await close_runtime()
        await Tortoise.close_connections()
        server.close()
    if not wrong:  # keep the worker logs only when there is something to look at
        shutil.rmtree(logs, ignore_errors=True)
    return {
        "command": " ".join(sys.argv),
        "seed": seed,
        "seconds": seconds,
        "writers": writers,
        "parents": parents,
        "workers": workers,
        "operations": dict(sorted(run.operations.items())),
        "operations_failed": dict(sorted(run.errors.items())),
        "faults": dict(sorted(run.faults.items())),
        "worker_kills": sum(p.kills for p in processes),
        "library_warnings": dict(warnings.messages),
        "quiesce_s": round(quiesce_s, 1),
        "counters_checked": checked,
        "counters_wrong": len(wrong),
        "wrong": wrong[:20],
        "worker_logs": str(logs) if wrong else None,
    }


def main(
    seconds: Annotated[float, typer.Option(help="How long the writers run.")] = 30,
    writers: Annotated[int, typer.Option(help="Concurrent writer tasks.")] = 16,
    parents: Annotated[int, typer.Option(help="Users and posts at the start.")] = 20,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 1,
    db: Annotated[str, typer.Option(help="Database URL (emptied first).")] = (
        "mysql://root:@127.0.0.1:3306/cc_faults"
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report here too.")
    ] = None,
    faults: Annotated[
        str, typer.Option(help="Comma-separated fault kinds; empty for none.")
    ] = ",".join(FAULTS),
) -> None:
    """Drive random writes through random faults; check every counter."""
    kinds = [kind for kind in faults.split(",") if kind]
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        raise typer.BadParameter(f"unknown faults {unknown}; pick from {list(FAULTS)}")
    logging.basicConfig(
        level=logging.ERROR, format="%(levelname)s %(name)s %(message)s"
    )
    report = asyncio.run(drive(seconds, writers, parents, workers, seed, db, kinds))
    text = json.dumps(report, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
    if report["counters_wrong"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
