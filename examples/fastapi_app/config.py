"""The Tortoise config of the example app, shared by the app and the worker.

The worker finds it through `TORTOISE_ORM=examples.fastapi_app.config.TORTOISE_ORM`.
"""

import os

TORTOISE_ORM = {
    "connections": {
        "default": os.environ.get("DATABASE_URL", "sqlite://example.sqlite3"),
    },
    "apps": {
        "models": {
            # The library's own tables (outbox and ledger) live beside the app's.
            "models": ["examples.fastapi_app.models", "tortoise_counter_cache.models"],
            "default_connection": "default",
        }
    },
}
