"""The library's own tables. Add `"tortoise_counter_cache.models"` to the `models`
list of the app whose connection holds your counted models, so that
`generate_schemas()` or Tortoise's migrations create them.

- `counter_cache_outbox` holds deltas of saves made inside a transaction: they are
  written in that same transaction, so they exist exactly when the child row commits.
- `counter_cache_ledger` records every batch of deltas a worker applied, in the same
  transaction as the UPDATE statements, so a batch retried after a crash is never
  applied twice.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

__all__ = ["CounterLedger", "CounterOutbox"]


class CounterOutbox(Model):
    """A delta recorded inside a database transaction, waiting for the worker."""

    id = fields.BigIntField(primary_key=True)
    counter = fields.CharField(max_length=512)
    delta = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)
    record_id = fields.CharField(max_length=32, null=True)
    """Set when a Redis record call failed after it may have run: the worker applies
    the row only if it can claim this id in Redis (no record call ran under it)."""
    shard = fields.IntField(null=True)
    """The shard whose marker holds `record_id`."""

    class Meta:
        table = "counter_cache_outbox"


class CounterLedger(Model):
    """A batch of deltas that was applied, keyed by the batch's token."""

    token = fields.CharField(max_length=64, primary_key=True)
    applied_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "counter_cache_ledger"
