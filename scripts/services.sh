#!/usr/bin/env bash
# Start the local services the tests need, when they are not answering already.
# Needs root for the system services; prints what it did.
set -u

wait_for() {  # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 0.5
  done
  echo "services: $name did not come up" >&2
  return 1
}

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "services: starting redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis-cli -h 127.0.0.1 ping || exit 1

if ! mariadb -uroot -h127.0.0.1 -e 'select 1' >/dev/null 2>&1; then
  echo "services: starting mariadb"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_for mariadb mariadb -uroot -h127.0.0.1 -e 'select 1' || exit 1

if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
  echo "services: starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for postgresql psql -h 127.0.0.1 -U postgres -c 'select 1' || exit 1
