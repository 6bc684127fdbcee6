"""SAQ worker settings, for `saq tortoise_counter_cache.worker.settings`.

The worker initialises Tortoise from the application's config (see
`tortoise_config.py`), applies the deltas, drains the transactional outbox in the
background and reconciles orphaned deltas on a cron, then closes its connections on
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from saq import CronJob
from saq.queue.redis import RedisQueue
from tortoise import Tortoise

from .jobs import (
    apply_shard,
    drain_outbox_forever,
    reconcile,
    reconcile_forever,
    wait_for_unfinished,
)
from .runtime import APPLY_JOB, RECONCILE_JOB, close_runtime
from .settings import Settings, get_settings
from .tortoise_config import load_tortoise_config

__all__ = ["settings", "shutdown", "startup"]

logger = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    """Initialise Tortoise (unless the host app did), sweep jobs a killed worker
    left active, and start the outbox drain and the reconcile loop."""
    if not Tortoise._inited:
        await Tortoise.init(config=load_tortoise_config())
        ctx["counter_cache_owns_tortoise"] = True
    # Jobs queued before this worker started can be wrongly swept as aborted when
    # Redis has no cached scripts yet; an explicit sweep first avoids that race.
    await ctx["worker"].queue.sweep()
    settings = get_settings()
    ctx["counter_cache_tasks"] = [
        asyncio.create_task(drain_outbox_forever(settings.outbox_poll_s)),
        asyncio.create_task(reconcile_forever(settings.reconcile_every_s)),
    ]
    logger.info("worker started queue=%s", ctx["worker"].queue.name)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Stop the background tasks and close what startup opened."""
    for task in ctx.pop("counter_cache_tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Transactions of cancelled jobs finish first: closing the pool would wait
    # forever for a connection a cancelled transaction still holds.
    await wait_for_unfinished(get_settings().job_timeout_s)
    await close_runtime()
    if ctx.pop("counter_cache_owns_tortoise", False):
        await Tortoise.close_connections()
    logger.info("worker stopped")


def build_settings(
    config: Settings | None = None, *, concurrency: int = 8, **worker: Any
) -> dict[str, Any]:
    """SAQ worker settings for `config` (default: the settings in force); extra
    keyword arguments are passed to `saq.Worker`."""
    config = config or get_settings()
    # The queue's client must not time out: SAQ blocks on BLMOVE while idle.
    client: Any = Redis.from_url(config.effective_queue_url, socket_timeout=None)
    return {
        "queue": RedisQueue(client, name=config.queue),
        "functions": [(APPLY_JOB, apply_shard), (RECONCILE_JOB, reconcile)],
        "cron_jobs": [
            CronJob(
                reconcile,
                cron=f"* * * * * */{config.reconcile_every_s}",
                unique=True,
                # A reconcile run takes milliseconds. Its key stays blocked while a
                # killed worker's run looks active, until a sweep finds it timed
                # out: keep both short so the reconciler never stalls for long.
                timeout=max(5, 2 * config.reconcile_every_s),
            )
        ],
        "timers": {"sweep": config.reconcile_every_s},
        "concurrency": concurrency,
        "startup": startup,
        "shutdown": shutdown,
        **worker,
    }


def settings() -> dict[str, Any]:
    """What `saq tortoise_counter_cache.worker.settings` loads."""
    return build_settings()
