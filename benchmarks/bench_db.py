"""Opening a benchmark's database: created when missing, with its tables."""

import warnings
from typing import Any

from tortoise import Tortoise


async def open_database(config: dict[str, Any]) -> None:
    """Initialise Tortoise on `config`, creating the database if it does not exist
    yet, and create whichever tables are missing (existing ones are kept)."""
    try:
        await Tortoise.init(config=config)
        await _create_tables()
    except Exception as error:
        text = f"{error} {error.__cause__} {error.__context__}".lower()
        if "unknown database" not in text and "does not exist" not in text:
            raise
        await Tortoise.close_connections()
        await Tortoise.init(config=config, _create_db=True)
        await _create_tables()


async def _create_tables() -> None:
    with warnings.catch_warnings():  # MariaDB warns about each existing table
        warnings.filterwarnings("ignore", message=".*already exists")
        await Tortoise.generate_schemas(safe=True)
