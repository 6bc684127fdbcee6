"""Group commit: saves that arrive while a Redis call is in flight share the next one.

A save returns only after the Redis call carrying its delta has returned, so the
delta is safely in Redis when `save()` returns. Under a burst of concurrent saves
that costs one Redis round trip per *batch* of saves rather than per save, which is
what keeps the write path close to the speed of a bare INSERT.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["GroupCommit"]

logger = logging.getLogger(__name__)


class GroupCommit:
    """Coalesces concurrent `submit()` calls of one event loop into few Redis calls."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._pending: dict[int, dict[str, int]] = {}
        self._busy = False
        self._next: asyncio.Future[None] | None = None

    async def submit(self, by_shard: dict[int, dict[str, int]]) -> None:
        """Record deltas (shard -> counter -> delta); returns once they are in Redis.

        Raises whatever the Redis call raised; the caller then still owns its deltas.
        """
        self._merge(by_shard)
        if self._busy:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._next)
            return
        self._busy = True
        try:
            await self._send()
        finally:
            self._continue()

    def _merge(self, by_shard: dict[int, dict[str, int]]) -> None:
        for shard, deltas in by_shard.items():
            target = self._pending.setdefault(shard, {})
            for counter, delta in deltas.items():
                target[counter] = target.get(counter, 0) + delta

    async def _send(self) -> None:
        batch, self._pending = self._pending, {}
        batch = {s: {c: d for c, d in cs.items() if d} for s, cs in batch.items()}
        armed = await self._runtime.store.record(
            {s: cs for s, cs in batch.items() if cs}
        )
        # The deltas are safe in Redis now; queueing the jobs need not delay the
        # saves (the reconciler covers a process that dies before it queued them).
        self._runtime.hand_over(armed)

    def _continue(self) -> None:
        if not self._pending:
            self._busy = False
            if self._next is not None:  # its deltas were carried by the last call
                self._next.set_result(None)
                self._next = None
            return
        waiters, self._next = self._next, None
        asyncio.get_running_loop().create_task(self._follow(waiters))

    async def _follow(self, waiters: asyncio.Future[None] | None) -> None:
        try:
            await self._send()
        except BaseException as error:
            if waiters is not None and not waiters.done():
                waiters.set_exception(error)
                waiters.exception()  # mark retrieved: each waiter handles it
        else:
            if waiters is not None and not waiters.done():
                waiters.set_result(None)
        finally:
            self._continue()
