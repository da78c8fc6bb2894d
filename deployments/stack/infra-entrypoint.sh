#!/bin/sh
# One role of the stack's infrastructure image (deployments/stack/infra.Dockerfile). Secrets come from
# files under /run/secrets (Docker secrets), never from the environment or the command line.
set -eu
role=${1:?usage: stack-infra postgres|redis|prometheus|alertmanager [ARGS...]}
shift
case "$role" in
  postgres)
    # A cluster of its own on first start: user prefect, its password from the secret file, database
    # prefect, password (scram) authentication for every network client.
    data=/var/lib/scalewise/postgres/data
    if [ ! -s "$data/PG_VERSION" ]; then
      initdb -D "$data" -U prefect --pwfile=/run/secrets/postgres_password \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
      echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
      echo "CREATE DATABASE prefect;" | postgres --single -D "$data" postgres >/dev/null
    fi
    exec postgres -D "$data" -c listen_addresses='*' -c max_connections=200 \
      -c unix_socket_directories=/run/postgresql "$@"
    ;;
  redis)
    exec redis-server --bind 0.0.0.0 --protected-mode no --dir /var/lib/scalewise/redis \
      --appendonly no --save '' "$@"
    ;;
  prometheus)
    exec prometheus --config.file=/etc/scalewise-stack/prometheus.yml \
      --storage.tsdb.path=/var/lib/scalewise/prometheus --web.listen-address=0.0.0.0:9090 \
      --web.enable-lifecycle "$@"
    ;;
  alertmanager)
    exec prometheus-alertmanager --config.file=/etc/scalewise-stack/alertmanager.yml \
      --storage.path=/var/lib/scalewise/alertmanager --web.listen-address=0.0.0.0:9093 \
      --cluster.listen-address= "$@"
    ;;
  *)
    echo "stack-infra: unknown role '$role' (postgres, redis, prometheus, alertmanager)" >&2
    exit 2
    ;;
esac
