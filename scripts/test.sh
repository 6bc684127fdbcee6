#!/usr/bin/env bash
# Run the suite once per database backend. Any failure, or a run that collected no
# test (pytest exit code 5), fails the whole command.
set -u
cd "$(dirname "$0")/.."
status=0
for backend in ${COUNTER_CACHE_TEST_DBS:-mysql postgres sqlite}; do
  echo "=== tests on $backend"
  COUNTER_CACHE_TEST_DB=$backend .venv/bin/pytest -q "$@"
  code=$?
  if [ $code -eq 5 ]; then
    echo "no test was collected on $backend: failing" >&2
    status=1
  elif [ $code -ne 0 ]; then
    status=$code
  fi
done
exit $status
