"""Processes the fault tests break on purpose: SAQ workers and a private Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tortoise_counter_cache as cc

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_env(settings: cc.Settings, db_url: str) -> dict[str, str]:
    """Environment of a worker process that shares `settings` and the database."""
    env = dict(os.environ)
    env.update(
        {
            "TORTOISE_ORM": "tests.faults.tortoise_orm.TORTOISE_ORM",
            "COUNTER_CACHE_FAULTS_DB_URL": db_url,
            "COUNTER_CACHE_REDIS_URL": settings.redis_url,
            "COUNTER_CACHE_QUEUE_URL": settings.effective_queue_url,
            "COUNTER_CACHE_QUEUE": settings.queue,
            "COUNTER_CACHE_KEY_PREFIX": settings.key_prefix,
            "COUNTER_CACHE_SHARDS": str(settings.shards),
            "COUNTER_CACHE_LEASE_MS": str(settings.lease_ms),
            "COUNTER_CACHE_BATCH_WINDOW_S": str(settings.batch_window_s),
            "COUNTER_CACHE_REDIS_TIMEOUT_S": str(settings.redis_timeout_s),
            "COUNTER_CACHE_REDIS_RETRY_AFTER_S": str(settings.redis_retry_after_s),
            "COUNTER_CACHE_MAX_DELTA_AGE_S": str(settings.max_delta_age_s),
            "COUNTER_CACHE_RECONCILE_EVERY_S": str(settings.reconcile_every_s),
            "COUNTER_CACHE_OUTBOX_POLL_S": str(settings.outbox_poll_s),
            "COUNTER_CACHE_JOB_TIMEOUT_S": str(settings.job_timeout_s),
        }
    )
    return env


@dataclass
class WorkerProcess:
    """One `python -m tests.faults.worker` process that can be killed and restarted."""

    env: dict[str, str]
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        with contextlib.ExitStack() as stack:
            output: Any = subprocess.DEVNULL
            if self.log is not None:  # the child keeps its own copy of the handle
                output = stack.enter_context(self.log.open("ab"))
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.worker"],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=output,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, a running job stays "active" in SAQ."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class PrivateRedis:
    """A redis-server of our own on a free port, with an append-only file fsynced on
    every write, so a restart keeps every acknowledged delta."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp("-redis")))
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: the server flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
