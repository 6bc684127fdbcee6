"""A real, throwaway Redis Cluster of three masters on loopback, for tests.

`start_cluster()` launches `redis-server --cluster-enabled yes` on free ports in a
temporary directory, joins them with `redis-cli --cluster create`, and waits until
every node reports `cluster_state:ok`. `LocalCluster.stop()` shuts each node down
and removes the directory. Nothing is persisted to disk.
"""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LocalCluster",
    "cluster_available",
    "running_cluster",
    "start_cluster",
    "start_worker_process",
    "stop_worker_process",
]

_WORKER_SETTINGS = "tests.cluster.worker_settings"
_BUS_OFFSET = 10_000  # Redis Cluster's node-to-node bus listens on port + 10000


@dataclass
class LocalCluster:
    """Three cluster masters started by this process."""

    ports: list[int]
    directory: Path

    @property
    def url(self) -> str:
        """A seed URL; the client discovers the other nodes from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout

    def stop(self) -> None:
        """Shut every node down (by its own pid if SHUTDOWN fails) and clean up."""
        for port in self.ports:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.cli(port, "shutdown", "nosave")
        for port in self.ports:
            pid = self._pid(port)
            if pid is not None and _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _pid(self, port: int) -> int | None:
        try:
            return int((self.directory / f"{port}.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def cluster_available() -> bool:
    """True when redis-server and redis-cli are on PATH."""
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


def start_cluster(masters: int = 3, timeout_s: float = 30.0) -> LocalCluster:
    """Start a cluster of `masters` nodes and wait until it serves every slot."""
    directory = Path(tempfile.mkdtemp(prefix="cc-cluster-"))
    cluster = LocalCluster(_free_ports(masters), directory)
    try:
        for port in cluster.ports:
            _start_node(port, directory)
        for port in cluster.ports:
            _wait_for(cluster, port, ("ping",), "PONG", timeout_s)
        nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
        subprocess.run(
            [
                *("redis-cli", "--cluster", "create", *nodes),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        for port in cluster.ports:
            _wait_for(cluster, port, ("cluster", "info"), "cluster_state:ok", timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(masters: int = 3) -> Iterator[LocalCluster]:
    """`start_cluster()` as a context manager that always stops the nodes."""
    cluster = start_cluster(masters)
    try:
        yield cluster
    finally:
        cluster.stop()


def _start_node(port: int, directory: Path) -> None:
    subprocess.run(
        [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", "2000",
            "--dir", str(directory),
            "--pidfile", str(directory / f"{port}.pid"),
            "--logfile", str(directory / f"{port}.log"),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "yes",
        ],
        check=True,
        timeout=10,
    )  # fmt: skip


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if (
            port + _BUS_OFFSET < 65_536
            and port not in ports
            and _free(port + _BUS_OFFSET)
        ):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _wait_for(
    cluster: LocalCluster,
    port: int,
    command: tuple[str, ...],
    expected: str,
    timeout_s: float,
) -> None:
    """Repeat `command` on the node at `port` until its reply contains `expected`."""
    deadline = time.monotonic() + timeout_s
    while expected not in cluster.cli(port, *command):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Redis node 127.0.0.1:{port} did not answer {expected!r} to "
                f"{' '.join(command)!r} within {timeout_s}s; see its log in "
                f"{cluster.directory}."
            )
        time.sleep(0.05)


# Worker processes: `saq tests.cluster.worker_settings` reads the library's settings
# from COUNTER_CACHE_* variables and the Tortoise config named by
# TORTOISE_ORM, which points here; the database URL comes from the parent test.
TORTOISE_ORM = {
    "connections": {"default": os.environ.get("COUNTER_CACHE_TEST_DB_URL", "")},
    "apps": {
        "models": {
            "models": ["tests.models", "tortoise_counter_cache.models"],
            "default_connection": "default",
        }
    },
}


def worker_settings() -> dict[str, Any]:
    """What the worker processes load: the library's settings with two job slots
    each, so that a few shards are enough to keep every process busy."""
    from tortoise_counter_cache.worker import build_settings

    return build_settings(concurrency=2)


def start_worker_process(
    environment: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """A `saq` worker process on the settings in `environment`, logging at INFO
    into `log_path`."""
    env = {**os.environ, "TORTOISE_ORM": "tests.cluster.TORTOISE_ORM", **environment}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "saq", _WORKER_SETTINGS, "--verbose"],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker_process(
    process: subprocess.Popen[bytes], timeout_s: float = 10
) -> None:
    """Ask a worker process to stop (SIGTERM), kill it if it does not."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
