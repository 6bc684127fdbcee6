"""The exceptions this library raises, all under one root.

```text
CounterCacheError
├── CounterDeclarationError    a counter is declared wrongly on a model
├── UnknownCounterError        a model, column or job names no known counter
├── InvalidDeltaError          a direction or amount that cannot be applied
├── ConfigurationError         settings or the Tortoise config are unusable
└── BackendUnavailableError    Redis or the database cannot be reached
```
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "CounterCacheError",
    "CounterDeclarationError",
    "InvalidDeltaError",
    "UnknownCounterError",
]


class CounterCacheError(Exception):
    """Root of every error raised by tortoise-counter-cache."""


class CounterDeclarationError(CounterCacheError, TypeError):
    """A counter cache is declared wrongly on a model (raised at class creation or
    at `Tortoise.init`)."""


class UnknownCounterError(CounterCacheError, LookupError):
    """A model, column or counter that the library does not know."""


class InvalidDeltaError(CounterCacheError, ValueError):
    """A direction, amount or primary key that cannot be applied to a counter."""


class ConfigurationError(CounterCacheError, ValueError):
    """Library settings or the application's Tortoise config are unusable."""


class BackendUnavailableError(CounterCacheError, ConnectionError):
    """Redis or the database could not be reached for an operation that needs it."""
