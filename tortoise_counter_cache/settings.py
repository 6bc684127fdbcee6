"""Where deltas and jobs go, and the knobs of the write path and the worker.

The application and the worker read the same settings: either what `configure()`
was given, or the `COUNTER_CACHE_*` environment variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["Settings", "configure", "get_settings"]

_ENV_PREFIX = "COUNTER_CACHE_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """All settings of the library. Every field has an environment variable named
    `COUNTER_CACHE_<FIELD>` in upper case (for example `COUNTER_CACHE_REDIS_URL`).

    Attributes:
        redis_url: Redis (or Redis Cluster, see `redis_cluster`) holding the deltas.
        queue: Name of the SAQ queue the apply jobs go to.
        queue_url: Redis holding the SAQ queue; defaults to `redis_url`. Must be a
            standalone Redis (`redis://` or `rediss://`): SAQ is not cluster-safe.
            Set it when `redis_url` is a cluster.
        redis_cluster: Treat `redis_url` as a Redis Cluster.
        key_prefix: Prefix of every Redis key the library writes.
        shards: Number of shards the counters are spread over. Each shard is one
            hash slot and at most one apply job at a time. Change it only while no
            delta is pending.
        lease_ms: How long a shard stays "armed" (one job owns it) without news
            from that job.
        batch_window_s: How long a job waits before each take, so that a burst is
            applied in a few UPDATE statements rather than one per save.
        redis_timeout_s: Socket timeout of the delta client; a save waits at most
            this long for Redis before it falls back to the database.
        redis_retry_after_s: After a Redis failure, saves go straight to the
            database for this long before Redis is tried again.
        max_delta_age_s: The reconciler schedules any delta older than this.
        reconcile_every_s: How often the worker's reconciler runs (1 to 59).
        outbox_poll_s: How often the worker drains the transactional outbox.
        job_timeout_s: SAQ timeout of an apply job; keep it above the database's
            lock wait timeout (50 s on InnoDB).
        ledger_retention_s: How long applied-batch records are kept.
        record_marker_ttl_s: How long Redis remembers that a record call ran. A
            save whose Redis call failed mid-way leaves its deltas in the outbox;
            the worker must drain them within this time to count them exactly.
    """

    redis_url: str = "redis://localhost:6379/0"
    queue: str = "counter_caches"
    queue_url: str | None = None
    redis_cluster: bool = False
    key_prefix: str = "cc"
    shards: int = 32
    lease_ms: int = 20_000
    batch_window_s: float = 0.1
    redis_timeout_s: float = 1.0
    redis_retry_after_s: float = 1.0
    max_delta_age_s: float = 60.0
    reconcile_every_s: int = 10
    outbox_poll_s: float = 0.25
    job_timeout_s: int = 120
    ledger_retention_s: int = 7 * 24 * 3600
    record_marker_ttl_s: float = 600.0

    def __post_init__(self) -> None:
        _check_positive(self, "shards", "lease_ms", "redis_timeout_s")
        _check_positive(self, "max_delta_age_s", "outbox_poll_s", "job_timeout_s")
        _check_positive(self, "record_marker_ttl_s")
        if self.batch_window_s < 0:
            raise ConfigurationError(
                f"batch_window_s must be 0 or more, got {self.batch_window_s!r}."
            )
        if not 1 <= self.reconcile_every_s <= 59:
            raise ConfigurationError(
                "reconcile_every_s must be between 1 and 59 seconds, got "
                f"{self.reconcile_every_s!r}."
            )
        if not self.key_prefix or "{" in self.key_prefix or "}" in self.key_prefix:
            raise ConfigurationError(
                f"key_prefix must be non-empty and free of braces, got "
                f"{self.key_prefix!r}."
            )

    @property
    def effective_queue_url(self) -> str:
        """The Redis URL of the SAQ queue."""
        return self.queue_url or self.redis_url

    def __repr__(self) -> str:
        # Never print passwords that URLs may carry.
        return (
            f"Settings(redis_url={_redact(self.redis_url)!r}, queue={self.queue!r}, "
            f"queue_url={_redact(self.effective_queue_url)!r}, shards={self.shards})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `COUNTER_CACHE_*` variables; unset ones keep their
        defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(_ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field, raw)
        return cls(**values)


def _parse(field: dataclasses.Field[Any], raw: str) -> Any:
    name = _ENV_PREFIX + field.name.upper()
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid {kind}; set it to a {kind} or unset it."
        ) from None
    return raw


def _check_positive(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(
                f"{name} must be a positive number, got {value!r}."
            )


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


_current: Settings | None = None


def configure(settings: Settings | None = None, **overrides: Any) -> Settings:
    """Set where deltas and jobs go, for this process.

    Call it before the first save, in the application and in the worker alike (the
    worker reads the environment unless its startup calls `configure`). Fields not
    given keep their environment or default values.

    Example:
        ```python
        configure(redis_url="redis://cache:6379/2", queue="counters")
        ```

    Raises:
        ConfigurationError: an unknown setting or an invalid value.
    """
    global _current
    base = settings or Settings.from_env()
    known = {field.name for field in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigurationError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; valid settings "
            f"are {', '.join(sorted(known))}."
        )
    _current = dataclasses.replace(base, **overrides)
    from . import runtime  # imported here: runtime depends on settings

    runtime.reset()
    return _current


def get_settings() -> Settings:
    """The settings in force: from `configure()`, else from the environment."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current
