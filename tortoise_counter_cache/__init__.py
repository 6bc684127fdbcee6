"""Counter caches for Tortoise ORM, kept by a SAQ worker instead of the request.

A save of a counted child records a delta in Redis; a worker applies the summed
delta to the parent row with one UPDATE, so a burst of children never queues on the
parent's row lock.
"""

from __future__ import annotations

from . import hooks as _hooks
from .declaration import async_counter_cache
from .enqueue import cache_and_enqueue
from .exceptions import (
    BackendUnavailableError,
    ConfigurationError,
    CounterCacheError,
    CounterDeclarationError,
    InvalidDeltaError,
    UnknownCounterError,
)
from .flush import FlushReport, flush
from .mixin import CounterCacheMixin
from .recount import RecountReport, recount
from .settings import Settings, configure, get_settings

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "CounterCacheError",
    "CounterCacheMixin",
    "CounterDeclarationError",
    "FlushReport",
    "InvalidDeltaError",
    "RecountReport",
    "Settings",
    "UnknownCounterError",
    "async_counter_cache",
    "cache_and_enqueue",
    "configure",
    "flush",
    "get_settings",
    "recount",
]

__version__ = "0.1.0"

_hooks.install()
