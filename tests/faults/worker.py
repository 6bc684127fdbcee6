"""A worker process for fault tests: `python -m tests.faults.worker`.

It is the library's worker (`build_settings`) with SAQ's sweep every second, so a
job left "active" by a SIGKILLed worker is found as soon as its timeout passes.
Settings come from the `COUNTER_CACHE_*` environment variables.
"""

import asyncio
import logging
import os

from saq import Worker

from tortoise_counter_cache.worker import build_settings


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("FAULTS_WORKER_LOG", "WARNING"),
        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s %(message)s",
    )
    options = build_settings(
        concurrency=8, dequeue_timeout=0.5, timers={"sweep": 1, "schedule": 1}
    )
    asyncio.run(Worker(**options).start())


if __name__ == "__main__":
    main()
