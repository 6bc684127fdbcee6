#!/usr/bin/env bash
# Run the suite once per database backend. Any failure, or a run that collected no
# test (pytest exit code 5), fails the whole command.
set -u
cd "$(dirname "$0")/.."
status=0
for backend in ${COUNTER_CACHE_TEST_DBS:-mysql asyncmy postgres sqlite}; do
  echo "=== tests on $backend"
  if [ "$backend" = asyncmy ]; then
    # MariaDB again, through asyncmy, which Tortoise prefers when importable.
    COUNTER_CACHE_TEST_DB=mysql COUNTER_CACHE_TEST_DRIVER=asyncmy \
      PYTHONPATH=.venv/asyncmy .venv/bin/pytest -q "$@"
  else
    COUNTER_CACHE_TEST_DB=$backend COUNTER_CACHE_TEST_DRIVER=aiomysql \
      .venv/bin/pytest -q "$@"
  fi
  code=$?
  if [ $code -eq 5 ]; then
    echo "no test was collected on $backend: failing" >&2
    status=1
  elif [ $code -ne 0 ]; then
    status=$code
  fi
done
exit $status
