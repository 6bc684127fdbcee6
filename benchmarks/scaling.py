"""The cost curve: how recording and draining scale as the work grows tenfold.

Two series, each step on empty Redis keys and a fresh parent table:

- `parents`: N parents (1k, 10k, 100k) each receive one delta, so N counters are
  pending when the worker starts;
- `events`: E events (10k, 100k, 1M) spread at random over 1,000 parents.

Per step it reports Redis memory per pending counter (MEMORY USAGE of the shards'
pending hashes, divided by the counters pending), the save latency (p50/p99 of
`cache_and_enqueue`, one call at a time, measured while the step's counters are
pending), the recording throughput, the worker's drain time (worker start until
every shard is empty), the UPDATE statements the worker ran (from its batch log;
MariaDB's server-wide `Com_update` is shown too), and whether the sums are exact.

    python benchmarks/scaling.py                 # every step
    python benchmarks/scaling.py --skip-big      # without 100k parents and 1M events

It uses its own database (`cc_scaling` on the local MariaDB by default) and its own
Redis key prefix and queue, and drops its keys when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, cast

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # the library sits in the checkout above
    sys.path.insert(0, str(HERE.parent))

import typer  # noqa: E402
from bench_db import open_database  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from saq import Worker  # noqa: E402
from tortoise import Tortoise, fields  # noqa: E402
from tortoise.models import Model  # noqa: E402

import tortoise_counter_cache as cc  # noqa: E402
from tortoise_counter_cache import runtime as cc_runtime  # noqa: E402
from tortoise_counter_cache.worker import build_settings  # noqa: E402

PREFIX = "ccscale"
SHARDS = 32
EVENT_PARENTS = 1_000
LATENCY_SAMPLES = 2_000
RECORD_CONCURRENCY = 200
console = Console(width=200)


class ScaleParent(Model):
    """A parent row with one counter column."""

    id = fields.IntField(primary_key=True)
    hits = fields.IntField(default=0)

    class Meta:
        table = "cc_scale_parent"


@dataclass
class Step:
    series: str
    parents: int
    events: int
    record_s: float = 0.0
    bytes_per_counter: float = 0.0
    pending_counters: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    drain_s: float = 0.0
    updates: int = 0
    com_update: int | None = None
    exact: bool = False


class BatchLog(logging.Handler):
    """Sums the worker's "batch applied" log records (counters, statements)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.statements = 0
        self.counters = 0

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if str(record.msg).startswith("batch applied") and isinstance(args, tuple):
            self.counters += cast(int, args[1])
            self.statements += cast(int, args[2])


async def setup_database(db_url: str) -> None:
    config = {
        "connections": {"default": db_url},
        "apps": {
            "bench": {
                "models": ["__main__", "tortoise_counter_cache.models"],
                "default_connection": "default",
            }
        },
    }
    await open_database(config)


async def reset_tables(parents: int) -> None:
    from tortoise_counter_cache.models import CounterLedger

    await ScaleParent.all().delete()
    await CounterLedger.all().delete()
    rows = [ScaleParent(id=i) for i in range(1, parents + 1)]
    await ScaleParent.bulk_create(rows, batch_size=5_000)


async def com_update() -> int | None:
    connection = Tortoise.get_connection("default")
    if connection.capabilities.dialect != "mysql":
        return None
    _, rows = await connection.execute_query("SHOW GLOBAL STATUS LIKE 'Com_update'")
    return int(rows[0]["Value"])


async def record_events(targets: list[int]) -> float:
    """Record one +1 per target, RECORD_CONCURRENCY at a time; returns seconds."""
    started = time.perf_counter()
    for start in range(0, len(targets), RECORD_CONCURRENCY):
        chunk = targets[start : start + RECORD_CONCURRENCY]
        await asyncio.gather(
            *(
                cc.cache_and_enqueue(ScaleParent, pk, "hits", "increment")
                for pk in chunk
            )
        )
    return time.perf_counter() - started


async def save_latency(parents: int) -> tuple[float, float, list[int]]:
    """p50 and p99 in ms of single, uncontended record calls; returns the targets
    so the caller can account for them."""
    rng = random.Random(parents)
    targets = [rng.randint(1, parents) for _ in range(LATENCY_SAMPLES)]
    samples = []
    for pk in targets:
        started = time.perf_counter()
        await cc.cache_and_enqueue(ScaleParent, pk, "hits", "increment")
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98], targets


async def pending_memory(redis: Redis) -> tuple[int, int]:
    """Bytes used by the shards' pending hashes, and the counters they hold."""
    total_bytes = total_counters = 0
    for shard in range(SHARDS):
        key = f"{{{PREFIX}:{shard}}}:pending"
        total_bytes += await redis.memory_usage(key, samples=0) or 0
        total_counters += await redis.hlen(key)
    return total_bytes, total_counters


async def drain(settings: cc.Settings) -> float:
    """Start a worker, wait until every shard is empty; returns seconds."""
    store = cc_runtime.get_runtime().store
    options = build_settings(settings, concurrency=SHARDS, dequeue_timeout=1.0)
    worker = Worker(**options)
    started = time.perf_counter()
    task = asyncio.create_task(worker.start())
    try:
        while True:
            states = await store.inspect(range(SHARDS))
            if not any(s.pending or s.inflight for s in states):
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await options["queue"].disconnect()


async def run_step(step: Step, settings: cc.Settings, redis: Redis) -> Step:
    await reset_tables(step.parents)
    rng = random.Random(step.events)
    if step.series == "parents":
        targets = list(range(1, step.parents + 1))
    else:
        targets = [rng.randint(1, step.parents) for _ in range(step.events)]
    step.record_s = await record_events(targets)
    used, step.pending_counters = await pending_memory(redis)
    step.bytes_per_counter = used / max(step.pending_counters, 1)
    step.p50_ms, step.p99_ms, extra = await save_latency(step.parents)
    expected = len(targets) + len(extra)

    batches = BatchLog()
    jobs_logger = logging.getLogger("tortoise_counter_cache.jobs")
    jobs_logger.addHandler(batches)
    jobs_logger.setLevel(logging.INFO)
    before = await com_update()
    try:
        step.drain_s = await drain(settings)
    finally:
        jobs_logger.removeHandler(batches)
    after = await com_update()
    step.updates = batches.statements
    step.com_update = after - before if after is not None and before else None
    total = cast(list[int], await ScaleParent.all().values_list("hits", flat=True))
    step.exact = sum(total) == expected
    return step


def steps(skip_big: bool) -> list[Step]:
    parents = [1_000, 10_000] + ([] if skip_big else [100_000])
    events = [10_000, 100_000] + ([] if skip_big else [1_000_000])
    return [Step("parents", n, n) for n in parents] + [
        Step("events", EVENT_PARENTS, e) for e in events
    ]


def show(results: list[Step]) -> None:
    table = Table(title="Cost curve (one row per step)")
    for column in (
        "series",
        "parents",
        "events",
        "pending counters",
        "B / pending counter",
        "record events/s",
        "save p50 ms",
        "save p99 ms",
        "drain s",
        "UPDATEs",
        "Com_update (server)",
        "exact",
    ):
        table.add_column(column, justify="right")
    for s in results:
        table.add_row(
            s.series,
            f"{s.parents:,}",
            f"{s.events:,}",
            f"{s.pending_counters:,}",
            f"{s.bytes_per_counter:.0f}",
            f"{s.events / s.record_s:,.0f}",
            f"{s.p50_ms:.3f}",
            f"{s.p99_ms:.3f}",
            f"{s.drain_s:.2f}",
            f"{s.updates:,}",
            "-" if s.com_update is None else f"{s.com_update:,}",
            "yes" if s.exact else "NO",
        )
    console.print(table)


async def main(db_url: str, redis_url: str, skip_big: bool) -> list[Step]:
    # SAQ warns when a stopped worker cancels its idle dequeue; not news here.
    logging.getLogger("saq").setLevel(logging.ERROR)
    settings = cc.configure(
        redis_url=redis_url,
        key_prefix=PREFIX,
        queue=PREFIX,
        shards=SHARDS,
        lease_ms=600_000,  # steps outlast the default lease; keep one job per shard
    )
    await setup_database(db_url)
    redis = Redis.from_url(redis_url)
    results = []
    try:
        for step in steps(skip_big):
            await cc_runtime.get_runtime().store.drop_all()
            console.log(
                f"step {step.series} parents={step.parents} events={step.events}"
            )
            results.append(await run_step(step, settings, redis))
            show(results[-1:])
    finally:
        await cc_runtime.get_runtime().store.drop_all()
        async for key in redis.scan_iter(match=f"saq:*{PREFIX}*", count=1_000):
            await redis.delete(key)
        await redis.aclose()
        await cc_runtime.close_runtime()
        await Tortoise.close_connections()
    return results


def cli(
    db: Annotated[
        str, typer.Option(help="Database URL; the database is created if missing.")
    ] = "mysql://root:@127.0.0.1:3306/cc_scaling",
    redis: Annotated[str, typer.Option(help="Redis URL for deltas and queue.")] = (
        "redis://127.0.0.1:6379/0"
    ),
    skip_big: Annotated[
        bool, typer.Option(help="Skip the 100k-parent and 1M-event steps.")
    ] = False,
) -> None:
    """Measure the cost curve and print one table row per step."""
    results = asyncio.run(main(db, redis, skip_big))
    show(results)


if __name__ == "__main__":
    typer.run(cli)
