"""The `counter-cache` command (also `python -m tortoise_counter_cache`).

```text
counter-cache status                     pending deltas, shards, queue and workers
counter-cache flush                      apply every pending delta now
counter-cache recount models.Post count_of_comments [--pk 3 --pk 7]
```

Each command finds the Tortoise config the way Tortoise's own CLI does:
`--config module.VARIABLE`, else the `TORTOISE_ORM` environment variable, else
`tortoise_orm` under `[tool.tortoise]` in pyproject.toml. Library settings come from
the `COUNTER_CACHE_*` environment variables. A usage or backend error prints one
line on stderr and exits with code 2.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from tortoise import Tortoise
from tortoise.exceptions import BaseORMException

from .exceptions import CounterCacheError
from .flush import flush as flush_deltas
from .models import CounterOutbox
from .recount import RecountReport, counter_spec
from .recount import recount as recount_counter
from .runtime import close_runtime, get_runtime
from .store import ShardState
from .tortoise_config import load_tortoise_config

__all__ = ["app", "main"]

USAGE_ERROR = 2

app = typer.Typer(
    name="counter-cache",
    help="Inspect and repair the counter caches of a Tortoise application.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Tortoise config as module.VARIABLE (default: TORTOISE_ORM or "
        "\\[tool.tortoise] in pyproject.toml).",
    ),
]

ResultT = TypeVar("ResultT")


@app.callback()
def options(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Log to stderr: -v for INFO, -vv for DEBUG (default: errors only).",
        ),
    ] = 0,
) -> None:
    """Inspect and repair the counter caches of a Tortoise application."""
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command()
def status(config: ConfigOption = None) -> None:
    """Show pending deltas per shard, the outbox, and the SAQ queue and workers."""
    run(config, _status)


@app.command()
def flush(
    config: ConfigOption = None,
    timeout_s: Annotated[
        float, typer.Option(help="Give up after this many seconds.", min=0.1)
    ] = 30.0,
) -> None:
    """Apply every pending delta now, and wait until it is in the database."""
    report = run(config, lambda: flush_deltas(timeout_s))
    stdout.print(
        f"flushed: {report.outbox_rows} outbox rows, {report.batches} batches from "
        f"{report.shards} shards, {report.statements} UPDATE statements in "
        f"{report.seconds:.2f}s",
        highlight=False,
    )


@app.command()
def recount(
    model: Annotated[str, typer.Argument(help="The parent model, as app.Model.")],
    column: Annotated[str, typer.Argument(help="Its counter column.")],
    config: ConfigOption = None,
    pk: Annotated[
        list[str] | None,
        typer.Option("--pk", help="Recount only this primary key (repeatable)."),
    ] = None,
    batch_rows: Annotated[
        int, typer.Option(help="Parent rows per transaction.", min=1)
    ] = 1000,
    settle_s: Annotated[
        float | None,
        typer.Option(
            help="Wait per batch for in-transit deltas (default: safe).", min=0
        ),
    ] = None,
) -> None:
    """Rebuild COLUMN of MODEL from COUNT(*) of the children and print the drift."""

    async def work() -> RecountReport:
        from .apply import resolve_model

        try:
            parent = resolve_model(model)
        except LookupError:
            fail(f"no registered model {model!r}; name it as app.Model.")
        counter_spec(parent, column)  # fail on a bad column before any progress bar
        pks = [_pk_value(parent, raw) for raw in pk] if pk is not None else None
        if not stdout.is_terminal:
            return await recount_counter(parent, column, pks, batch_rows, settle_s)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stdout,
        ) as bar:
            task = bar.add_task(f"recount {model}.{column}", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await recount_counter(
                parent, column, pks, batch_rows, settle_s, advance
            )

    report = run(config, work)
    stdout.print(
        f"recounted {report.model}.{report.column}: {report.rows_checked} rows "
        f"checked, {report.rows_repaired} repaired, drift {report.total_drift}",
        highlight=False,
    )
    if report.drifts:
        table = Table("pk", "old", "new", title="repaired (first rows)")
        for drift in report.drifts[:20]:
            table.add_row(str(drift.pk), str(drift.old), str(drift.new))
        stdout.print(table)


def main() -> None:
    """Entry point of the `counter-cache` script: usage errors, like every other
    error, print one line on stderr and exit with code 2."""
    if len(sys.argv) < 2:
        app()  # prints the help
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors, vendored by Typer
        _print_error(_one_line(error))
        sys.exit(USAGE_ERROR)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str) -> NoReturn:
    """Print a one-line error on stderr and exit with code 2."""
    _print_error(message)
    raise typer.Exit(USAGE_ERROR)


def _print_error(message: str) -> None:
    stderr.print(f"error: {message}", markup=False, highlight=False)


def run(config: str | None, work: Callable[[], Awaitable[ResultT]]) -> ResultT:
    """Initialise Tortoise from `config`, run `work`, close everything."""
    try:
        return asyncio.run(_with_tortoise(config, work))
    except (CounterCacheError, BaseORMException, RedisError, OSError) as error:
        fail(_one_line(error))


async def _with_tortoise(
    config: str | None, work: Callable[[], Awaitable[ResultT]]
) -> ResultT:
    await Tortoise.init(config=load_tortoise_config(config))
    try:
        return await work()
    finally:
        await close_runtime()
        await Tortoise.close_connections()


def _one_line(error: BaseException) -> str:
    if isinstance(error, typer.TyperException):
        text = error.format_message()
    elif isinstance(error, CounterCacheError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:500] or type(error).__name__


def _pk_value(model: Any, raw: str) -> Any:
    try:
        return model._meta.pk.to_python_value(raw)
    except (TypeError, ValueError):
        fail(f"--pk {raw!r} is not a valid primary key of {model.__name__}.")


async def _status() -> None:
    runtime = get_runtime()
    states = await runtime.store.inspect(range(runtime.settings.shards))
    stdout.print(_shard_table(states))
    outbox = await CounterOutbox.all().count()
    oldest = await CounterOutbox.all().order_by("id").first()
    outbox_age = (
        f", oldest {_age(oldest.created_at.timestamp() * 1000)}" if oldest else ""
    )
    stdout.print(f"outbox: {outbox} rows{outbox_age}")
    info = await runtime.queue.info()
    stdout.print(
        f"queue {info['name']!r}: {info['queued']} queued, {info['active']} active, "
        f"{info['scheduled']} scheduled, {len(info['workers'])} workers"
    )


def _shard_table(states: list[ShardState]) -> Table:
    table = Table("shard", "pending", "in flight", "oldest delta", "lease")
    busy = [s for s in states if s.pending or s.inflight or s.lease_ms_left > 0]
    for state in busy:
        table.add_row(
            str(state.shard),
            str(state.pending),
            str(state.inflight),
            _age(state.since_ms) if state.since_ms is not None else "-",
            f"{state.lease_ms_left / 1000:.1f}s" if state.lease_ms_left > 0 else "free",
        )
    since = [s.since_ms for s in states if s.since_ms is not None]
    table.add_section()
    table.add_row(
        f"all {len(states)}",
        str(sum(s.pending for s in states)),
        str(sum(s.inflight for s in states)),
        _age(min(since)) if since else "-",
        f"{sum(s.lease_ms_left > 0 for s in states)} held",
    )
    return table


def _age(epoch_ms: float) -> str:
    return f"{max(time.time() - epoch_ms / 1000, 0.0):.1f}s"
