"""Models of the burst benchmark: one set of tables per way of counting.

`Bare*` has no counter columns (the floor), `Sync*` keeps its counters the Rails
way (the benchmark runs the UPDATEs itself, in the insert's transaction) and
`Async*` is counted by this library.
"""

from tortoise import fields
from tortoise.models import Model

from tortoise_counter_cache import CounterCacheMixin, async_counter_cache


class BareUser(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, default="")


class BarePost(Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=100, default="")


class BareComment(Model):
    id = fields.IntField(primary_key=True)
    body = fields.CharField(max_length=100, default="")
    user = fields.ForeignKeyField("models.BareUser", related_name="comments")
    post = fields.ForeignKeyField("models.BarePost", related_name="comments")


class SyncUser(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, default="")
    comments_count = fields.IntField(default=0)


class SyncPost(Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=100, default="")
    comments_count = fields.IntField(default=0)


class SyncComment(Model):
    id = fields.IntField(primary_key=True)
    body = fields.CharField(max_length=100, default="")
    user = fields.ForeignKeyField("models.SyncUser", related_name="comments")
    post = fields.ForeignKeyField("models.SyncPost", related_name="comments")


class AsyncUser(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, default="")
    comments_count = fields.IntField(default=0)


class AsyncPost(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=100, default="")
    comments_count = fields.IntField(default=0)


class AsyncComment(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    body = fields.CharField(max_length=100, default="")
    user = async_counter_cache(
        fields.ForeignKeyField("models.AsyncUser", related_name="comments")
    )
    post = async_counter_cache(
        fields.ForeignKeyField("models.AsyncPost", related_name="comments")
    )
