"""The burst benchmark (`make demo`) still runs end to end, on tiny numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from tests.conftest import DB_URL, REDIS_URL

BURST = Path(__file__).resolve().parent.parent / "benchmarks" / "burst.py"


def load_burst() -> ModuleType:
    spec = importlib.util.spec_from_file_location("burst", BURST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["burst"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_burst_benchmark_reports_every_mode_exact(tmp_path: Path) -> None:
    """A 30-comment burst reports every mode, and the async counters end exact."""
    burst = load_burst()
    # The suite's own database: Tortoise caches queries per model class, so a
    # process that switched backend would break the tests that run after this one.
    args = ["--db", DB_URL, "--comments", "30", "--concurrency", "5", "--drain", "20"]
    args += ["--redis", REDIS_URL, "--worker", "inline", "--quiet"]
    args += ["--json", str(tmp_path / "burst.json"), "--plot", str(tmp_path / "b.png")]
    burst.main(args)
    report = json.loads((tmp_path / "burst.json").read_text())
    modes = {row["mode"]: row for row in report["modes"]}
    assert list(modes) == ["bare", "sync", "sync-retry", "async"]
    assert modes["async"]["failed"] == 0
    assert modes["async"]["exact"] is True
    assert modes["sync-retry"]["exact"] is True
    assert report["drain"]["exact"] is True
    assert (tmp_path / "b.png").stat().st_size > 0
