"""Specification: the worker runs as `saq tortoise_counter_cache.worker.settings`,
finds the application's Tortoise config like Tortoise's CLI does, and says clearly
what is wrong when it cannot."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tortoise_counter_cache as cc
from tests.conftest import REDIS_URL, all_exact, eventually
from tests.models import Comment, Post, User
from tortoise_counter_cache import ConfigurationError
from tortoise_counter_cache.tortoise_config import load_tortoise_config

ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings: cc.Settings) -> dict[str, str]:
    return {
        **os.environ,
        "TORTOISE_ORM": "tests.app_config.TORTOISE_ORM",
        "COUNTER_CACHE_REDIS_URL": REDIS_URL,
        "COUNTER_CACHE_QUEUE": settings.queue,
        "COUNTER_CACHE_KEY_PREFIX": settings.key_prefix,
        "COUNTER_CACHE_SHARDS": str(settings.shards),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    }


async def test_saq_command_applies_counts(
    db: None, settings: cc.Settings, tmp_path: Path
) -> None:
    """The documented worker command, run as a separate process, applies counts."""
    saq = Path(sys.executable).parent / "saq"
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(saq),
            "tortoise_counter_cache.worker.settings",
            "-v",
            cwd=ROOT,
            env=worker_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        user = await User.create()
        post = await Post.create(user=user)
        await asyncio.gather(*(Comment.create(user=user, post=post) for _ in range(20)))
        await eventually(all_exact, timeout_s=30)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "worker started" in output, output
    assert process.returncode in (0, -15)


def test_config_is_found_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TORTOISE_ORM=module.VARIABLE names the config."""
    monkeypatch.setenv("TORTOISE_ORM", "tests.app_config.TORTOISE_ORM")
    assert "tests.models" in load_tortoise_config()["apps"]["models"]["models"]


def test_config_is_found_in_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TORTOISE_ORM, [tool.tortoise] tortoise_orm in pyproject.toml is used."""
    monkeypatch.delenv("TORTOISE_ORM", raising=False)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tortoise]\ntortoise_orm = "myapp_settings.CONFIG"\n'
    )
    (tmp_path / "myapp_settings.py").write_text(
        'CONFIG = {"connections": {}, "apps": {}}\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_tortoise_config() == {"connections": {}, "apps": {}}


def test_missing_config_says_how_to_provide_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no config anywhere, the error names both ways to provide one."""
    monkeypatch.delenv("TORTOISE_ORM", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"set TORTOISE_ORM=module.VARIABLE"):
        load_tortoise_config()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nodots", r"'nodots' is not of the form module.VARIABLE"),
        ("no_such_module_xyz.CONFIG", r"Cannot import 'no_such_module_xyz'"),
        (
            "tests.app_config.MISSING",
            r"must name a Tortoise config dict, found "
            r"NoneType",
        ),
    ],
)
def test_bad_config_path_is_refused(path: str, message: str) -> None:
    """A malformed, unimportable or wrong config path gets a clear error."""
    with pytest.raises(ConfigurationError, match=message):
        load_tortoise_config(path)
