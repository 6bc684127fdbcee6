"""Finding the application's Tortoise config the way Tortoise's own CLI does: the
`TORTOISE_ORM` environment variable holding `module.VARIABLE`, else
`tortoise_orm = "module.VARIABLE"` under `[tool.tortoise]` in pyproject.toml."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from tortoise.cli.utils import tortoise_orm_config

from .exceptions import ConfigurationError

__all__ = ["load_tortoise_config"]


def load_tortoise_config(path: str | None = None) -> dict[str, Any]:
    """The Tortoise config dict named by `path`, `TORTOISE_ORM` or pyproject.toml.

    Raises:
        ConfigurationError: nothing names a config, or it cannot be imported.
    """
    path = path or tortoise_orm_config()
    if not path:
        raise ConfigurationError(
            "No Tortoise config found: set TORTOISE_ORM=module.VARIABLE (for example "
            "TORTOISE_ORM=app.settings.TORTOISE_ORM), or add tortoise_orm = "
            '"module.VARIABLE" under [tool.tortoise] in pyproject.toml.'
        )
    module_name, _, variable = path.rpartition(".")
    if not module_name or not variable:
        raise ConfigurationError(
            f"Tortoise config path {path!r} is not of the form module.VARIABLE."
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"Cannot import {module_name!r} named by the Tortoise config path "
            f"{path!r}: {error}. Run from the directory that contains it, or fix "
            "the path."
        ) from error
    config = getattr(module, variable, None)
    if not isinstance(config, dict):
        raise ConfigurationError(
            f"{path!r} must name a Tortoise config dict, found {type(config).__name__}."
        )
    return config
