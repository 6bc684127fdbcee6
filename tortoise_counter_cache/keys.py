"""Names of every Redis key the library writes, and how a counter maps to a shard.

A *counter* is one integer column of one parent row, written as the compact JSON
array `[model_label, column, lookup_value]` (plus the lookup field name when the
foreign key targets a unique field other than the primary key). All keys of a shard
share one hash tag, `{<prefix>:<shard>}`, so every script touches a single Redis
Cluster hash slot.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = ["CounterRef", "ShardKeys", "shard_of"]


@dataclass(frozen=True, slots=True)
class CounterRef:
    """One counter: `column` of the `model_label` row whose `lookup` field equals
    `value` (`lookup` is None for the primary key)."""

    model_label: str
    column: str
    value: Any
    lookup: str | None = None

    def encode(self) -> str:
        # The hot path of every save: labels and columns are Python identifiers,
        # so only a string value needs JSON's escaping.
        value = self.value
        text = str(value) if type(value) is int else json.dumps(value)
        if self.lookup is None:
            return f'["{self.model_label}","{self.column}",{text}]'
        return f'["{self.model_label}","{self.column}",{text},"{self.lookup}"]'

    @classmethod
    def decode(cls, raw: str | bytes) -> CounterRef:
        """Parse an encoded counter; raises ValueError on anything malformed."""
        parts = json.loads(raw)
        if not isinstance(parts, list) or len(parts) not in (3, 4):
            raise ValueError(f"not a counter reference: {raw!r}")
        label, column, value = parts[0], parts[1], parts[2]
        lookup = parts[3] if len(parts) == 4 else None
        if not isinstance(label, str) or not isinstance(column, str):
            raise ValueError(f"not a counter reference: {raw!r}")
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise ValueError(f"not a counter reference: {raw!r}")
        return cls(label, column, value, lookup)

    def row_identity(self) -> str:
        """The parent row, independent of the column: what decides the shard."""
        return f"{self.model_label}|{self.lookup or ''}|{self.value!r}"


def shard_of(counter: CounterRef, shards: int) -> int:
    """The shard of a counter. All columns of one parent row share a shard."""
    return zlib.crc32(counter.row_identity().encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The Redis keys of one shard."""

    prefix: str
    shard: int

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.shard}}}"

    @property
    def pending(self) -> str:
        """Hash: encoded counter -> delta not yet taken by a job."""
        return f"{self.tag}:pending"

    @property
    def since(self) -> str:
        """String: epoch milliseconds of the oldest delta in `pending`."""
        return f"{self.tag}:since"

    @property
    def lease(self) -> str:
        """String with an expiry: set while one job owns the shard."""
        return f"{self.tag}:lease"

    @property
    def inflight(self) -> str:
        """Hash: deltas taken by a job and not yet known to be applied."""
        return f"{self.tag}:inflight"

    def marker(self, record_id: str) -> str:
        """String with an expiry: this shard's part of record call `record_id` ran."""
        return f"{self.tag}:rec:{record_id}"

    @property
    def token(self) -> str:
        """String: the ledger token of the batch in `inflight`."""
        return f"{self.tag}:token"
