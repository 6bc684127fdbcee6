"""The FastAPI example app, run in-process with a real worker, database and Redis.

FastAPI and httpx are imported unconditionally: without them this module fails,
it is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from saq import Worker
from tortoise import Tortoise

import tortoise_counter_cache as cc
from examples.fastapi_app.main import create_app
from tests.conftest import DB_NAME, DB_URL, eventually
from tortoise_counter_cache.worker import build_settings

# The example's models use the default table names, which the suite's own models
# also use, so the example gets a database of its own, under a connection name of
# its own (Tortoise caches its SQL by connection name and table name).
EXAMPLE_CONFIG: dict[str, Any] = {
    "connections": {"example": DB_URL.replace(DB_NAME, f"{DB_NAME}_example")},
    "apps": {
        "models": {
            "models": ["examples.fastapi_app.models", "tortoise_counter_cache.models"],
            "default_connection": "example",
        }
    },
}


@pytest_asyncio.fixture
async def example_db() -> AsyncIterator[None]:
    """An empty database with the example's tables, dropped afterwards."""
    await Tortoise.init(config=EXAMPLE_CONFIG, _create_db=True)
    await Tortoise._drop_databases()
    await Tortoise.init(config=EXAMPLE_CONFIG, _create_db=True)
    await Tortoise.generate_schemas()
    await Tortoise.close_connections()
    yield
    await Tortoise.init(config=EXAMPLE_CONFIG)
    await Tortoise._drop_databases()


@pytest_asyncio.fixture
async def client(
    example_db: None, settings: cc.Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the running app, with a SAQ worker in the same loop."""
    app: FastAPI = create_app(EXAMPLE_CONFIG, generate_schemas=False)
    async with app.router.lifespan_context(app):
        options = build_settings(settings, concurrency=4, dequeue_timeout=1.0)
        worker = Worker(**options)
        task = asyncio.create_task(worker.start())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://example"
        ) as http:
            yield http
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await options["queue"].disconnect()


async def test_example_app_counts_become_exact(client: httpx.AsyncClient) -> None:
    """Comments created, imported in a transaction and deleted over HTTP end as
    exact counts on the post and the user."""
    user = (await client.post("/users", json={"name": "ada"})).json()
    post = (
        await client.post("/posts", json={"user_id": user["id"], "title": "hello"})
    ).json()
    comments_url = f"/posts/{post['id']}/comments"

    created = await asyncio.gather(
        *(
            client.post(comments_url, json={"user_id": user["id"], "body": f"c{i}"})
            for i in range(40)
        )
    )
    assert {response.status_code for response in created} == {201}
    imported = await client.post(
        f"{comments_url}/import",
        json={"user_id": user["id"], "bodies": [f"i{i}" for i in range(10)]},
    )
    assert imported.status_code == 201
    for response in created[:5]:
        deleted = await client.delete(f"/comments/{response.json()['id']}")
        assert deleted.status_code == 204

    async def counts() -> tuple[int, int, int]:
        post_now = (await client.get(f"/posts/{post['id']}")).json()
        user_now = (await client.get(f"/users/{user['id']}")).json()
        return (
            post_now["count_of_comments"],
            user_now["comments_count"],
            user_now["posts_count"],
        )

    await eventually(lambda: _equals(counts, (45, 45, 1)), timeout_s=20)


async def test_example_app_returns_404_for_unknown_post(
    client: httpx.AsyncClient,
) -> None:
    """Reading a post that does not exist answers 404."""
    response = await client.get("/posts/999999")
    assert response.status_code == 404


async def _equals(read: Any, expected: tuple[int, ...]) -> bool:
    return bool(await read() == expected)
