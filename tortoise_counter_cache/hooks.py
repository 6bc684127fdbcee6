"""The one place the library reaches into Tortoise: after `Tortoise.init` links
related models, every counter declaration is checked and resolved, so a mistake
fails at start-up with a `CounterDeclarationError` instead of at the first save.

Tortoise offers no public hook for this; `Apps._init_relations` is wrapped once, at
import. The pinned Tortoise version is tested; see docs/limitations.md.
"""

from __future__ import annotations

import functools
from typing import Any

from tortoise.apps import Apps

from .declaration import resolve_counters

__all__ = ["install"]


def install() -> None:
    original = Apps._init_relations
    if getattr(original, "_counter_cache_hook", False):
        return

    @functools.wraps(original)
    def init_relations_then_resolve_counters(
        self: Apps, *args: Any, **kwargs: Any
    ) -> Any:
        result = original(self, *args, **kwargs)
        resolve_counters(self.get_models_iterable())
        return result

    init_relations_then_resolve_counters._counter_cache_hook = True  # type: ignore[attr-defined]
    Apps._init_relations = init_relations_then_resolve_counters  # type: ignore[method-assign]
