"""HTTP endpoints that create users, posts and comments and read their counters.

Run it with `uvicorn examples.fastapi_app.main:app` from the repository root, and a
worker beside it (see README.md in this folder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from tortoise.contrib.fastapi import RegisterTortoise
from tortoise.transactions import in_transaction

from .config import TORTOISE_ORM
from .models import Comment, Post, User


class NewUser(BaseModel):
    name: str = Field(max_length=50)


class NewPost(BaseModel):
    user_id: int
    title: str = Field(max_length=100)


class NewComment(BaseModel):
    user_id: int
    body: str = Field(max_length=200)


class NewComments(BaseModel):
    user_id: int
    bodies: list[str] = Field(max_length=1000)


def create_app(
    config: dict[str, Any] | None = None, *, generate_schemas: bool = True
) -> FastAPI:
    """The app, on `config` (default: `config.TORTOISE_ORM`).

    `generate_schemas` creates missing tables at start-up, which suits a demo; use
    migrations in a real project.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with RegisterTortoise(
            app, config=config or TORTOISE_ORM, generate_schemas=generate_schemas
        ):
            yield

    app = FastAPI(title="Counter cache example", lifespan=lifespan)

    @app.post("/users", status_code=201)
    async def create_user(new: NewUser) -> dict[str, Any]:
        user = await User.create(name=new.name)
        return await read_user(user.id)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> dict[str, Any]:
        user = await User.get_or_none(id=user_id)
        if user is None:
            raise HTTPException(404, f"no user {user_id}")
        return {
            "id": user.id,
            "name": user.name,
            "posts_count": user.posts_count,
            "comments_count": user.comments_count,
        }

    @app.post("/posts", status_code=201)
    async def create_post(new: NewPost) -> dict[str, Any]:
        # One INSERT; the +1 on the user's posts_count goes to Redis.
        post = await Post.create(user_id=new.user_id, title=new.title)
        return await read_post(post.id)

    @app.get("/posts/{post_id}")
    async def read_post(post_id: int) -> dict[str, Any]:
        post = await Post.get_or_none(id=post_id)
        if post is None:
            raise HTTPException(404, f"no post {post_id}")
        return {
            "id": post.id,
            "title": post.title,
            "user_id": post.user_id,
            "count_of_comments": post.count_of_comments,
        }

    @app.post("/posts/{post_id}/comments", status_code=201)
    async def create_comment(post_id: int, new: NewComment) -> dict[str, Any]:
        # Outside a transaction: the deltas for the post and the user go to Redis
        # in one round trip, and the request never waits on the post's row lock.
        comment = await Comment.create(
            post_id=post_id, user_id=new.user_id, body=new.body
        )
        return {"id": comment.id, "post_id": post_id, "user_id": new.user_id}

    @app.post("/posts/{post_id}/comments/import", status_code=201)
    async def import_comments(post_id: int, new: NewComments) -> dict[str, Any]:
        # Inside a transaction the deltas go to the outbox table, in the same
        # transaction: if it rolls back, nothing is counted.
        async with in_transaction():
            for body in new.bodies:
                await Comment.create(post_id=post_id, user_id=new.user_id, body=body)
        return {"post_id": post_id, "created": len(new.bodies)}

    @app.delete("/comments/{comment_id}", status_code=204)
    async def delete_comment(comment_id: int) -> None:
        comment = await Comment.get_or_none(id=comment_id)
        if comment is None:
            raise HTTPException(404, f"no comment {comment_id}")
        await comment.delete()

    return app


app = create_app()
