"""A Tortoise config module, as an application would have one, for worker
subprocesses started by the tests (`TORTOISE_ORM=tests.app_config.TORTOISE_ORM`)."""

from tests.conftest import tortoise_config

TORTOISE_ORM = tortoise_config()
