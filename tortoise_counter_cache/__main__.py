"""`python -m tortoise_counter_cache`: the `counter-cache` command."""

from .cli import main

main()
