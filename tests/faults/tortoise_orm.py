"""The Tortoise config of fault-test worker processes (`TORTOISE_ORM` points here).

The database URL comes from `COUNTER_CACHE_FAULTS_DB_URL`, which the test or the
driver sets to its own database, because a test database is named after the pytest
process and a worker process cannot compute it.
"""

import os

TORTOISE_ORM = {
    "connections": {"default": os.environ["COUNTER_CACHE_FAULTS_DB_URL"]},
    "apps": {
        "models": {
            "models": ["tests.models", "tortoise_counter_cache.models"],
            "default_connection": "default",
        }
    },
}
