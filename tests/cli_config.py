"""The Tortoise config the command-line tests pass with `--config` or
`TORTOISE_ORM`: the test database, whose URL the test hands over in
`COUNTER_CACHE_TEST_DB_URL` (its name depends on the pytest process)."""

import os

TORTOISE_ORM = {
    "connections": {"default": os.environ.get("COUNTER_CACHE_TEST_DB_URL", "")},
    "apps": {
        "models": {
            "models": ["tests.models", "tortoise_counter_cache.models"],
            "default_connection": "default",
        }
    },
}
