"""The seed's three models: users write posts, and comment on posts."""

from tortoise import fields
from tortoise.models import Model

from tortoise_counter_cache import CounterCacheMixin, async_counter_cache


class User(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)
    comments_count = fields.IntField(default=0)
    posts_count = fields.IntField(default=0)


class Post(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=100)
    user = async_counter_cache(
        fields.ForeignKeyField("models.User", related_name="posts")
    )
    count_of_comments = fields.IntField(default=0)


class Comment(CounterCacheMixin, Model):
    id = fields.IntField(primary_key=True)
    body = fields.CharField(max_length=200)
    user = async_counter_cache(
        fields.ForeignKeyField("models.User", related_name="comments")
    )
    post = async_counter_cache(
        fields.ForeignKeyField("models.Post", related_name="comments"),
        "count_of_comments",
    )
