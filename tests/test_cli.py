"""Specification of the `counter-cache` command, run as `python -m
tortoise_counter_cache` in a subprocess against the test database and Redis."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

import tortoise_counter_cache as cc
from tests.conftest import DB_URL, counters_exact
from tests.models import Comment, Post, User

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "tests.cli_config.TORTOISE_ORM"


async def run_cli(
    settings: cc.Settings, *args: str, **env: str
) -> tuple[int, str, str]:
    """Run the command with this test's settings; returns (code, stdout, stderr)."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        "COLUMNS": "120",
        "COUNTER_CACHE_TEST_DB_URL": DB_URL,
        "COUNTER_CACHE_REDIS_URL": settings.redis_url,
        "COUNTER_CACHE_KEY_PREFIX": settings.key_prefix,
        "COUNTER_CACHE_QUEUE": settings.queue,
        "COUNTER_CACHE_SHARDS": str(settings.shards),
        **env,
    }
    if "TORTOISE_ORM" not in env:
        environ.pop("TORTOISE_ORM", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tortoise_counter_cache",
        *args,
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_status_shows_pending_deltas_and_queue(
    db: None, settings: cc.Settings
) -> None:
    """status prints the pending counters, the outbox and the queue, and exits 0."""
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.create(user=user, post=post)

    code, out, err = await run_cli(settings, "status", "--config", CONFIG)

    assert (code, err) == (0, "")
    total = next(line for line in out.splitlines() if "all 8" in line)
    cells = [cell.strip() for cell in total.split("│")]
    assert cells[2] == "3"  # posts_count, comments_count, count_of_comments
    assert "outbox: 0 rows" in out
    assert f"queue '{settings.queue}'" in out


async def test_cli_flush_applies_pending_deltas(
    db: None, settings: cc.Settings
) -> None:
    """flush, with the config named by TORTOISE_ORM, applies every pending delta."""
    user = await User.create()
    post = await Post.create(user=user)
    await Comment.create(user=user, post=post)

    code, out, err = await run_cli(settings, "flush", TORTOISE_ORM=CONFIG)

    assert (code, err) == (0, "")
    assert out.startswith("flushed: 0 outbox rows")
    assert await counters_exact() == []


@pytest.mark.parametrize("terminal", ["0", "1"])
async def test_cli_recount_repairs_drift(
    db: None, settings: cc.Settings, terminal: str
) -> None:
    """recount rebuilds the column from the children and prints the drift, with a
    progress bar on a terminal and without one otherwise."""
    user = await User.create()
    first, second = await Post.create(user=user), await Post.create(user=user)
    await Comment.bulk_create([Comment(user=user, post=first) for _ in range(3)])
    args = ["models.Post", "count_of_comments", "--batch-rows", "1", "--settle-s", "0"]

    code, out, err = await run_cli(
        settings, "recount", *args, "-c", CONFIG, TTY_COMPATIBLE=terminal
    )

    assert (code, err) == (0, "")
    assert "2 rows checked, 1 repaired, drift 3" in out
    assert (await Post.get(id=first.id)).count_of_comments == 3
    assert (await Post.get(id=second.id)).count_of_comments == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["recount", "models.Nope", "x", "-c", CONFIG], {}, "no registered model"),
        (
            ["recount", "models.Post", "title", "-c", CONFIG],
            {},
            "counted columns are: count_of_comments",
        ),
        (
            ["recount", "models.Post", "count_of_comments", "--pk", "x", "-c", CONFIG],
            {},
            "--pk 'x' is not a valid primary key of Post",
        ),
        (["recount", "models.Post"], {}, "Missing argument 'column'"),
        (["status"], {}, "No Tortoise config found"),
        (["status", "-c", "tests.nowhere.X"], {}, "Cannot import 'tests.nowhere'"),
        (
            ["status", "-c", CONFIG],
            {"COUNTER_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"},
            "ConnectionError",
        ),
        (
            ["recount", "models.Post", "count_of_comments", "-c", CONFIG],
            {"COUNTER_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"},
            "recount() needs Redis",
        ),
    ],
)
async def test_cli_bad_input_exits_2_with_one_line(
    db: None, settings: cc.Settings, args: list[str], env: dict[str, str], message: str
) -> None:
    """Unknown models or columns, a missing config or an unreachable Redis print
    one line on stderr, no traceback, and exit with code 2."""
    code, out, err = await run_cli(settings, *args, **env)

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
