#!/usr/bin/env bash
# The whole system as one stack on the local single-node Swarm (deployments/stack.yaml):
#   bash scripts/stack.sh up        build the images (cached), deploy, wait until it serves; prints the URLs
#   bash scripts/stack.sh status    the services and their replicas, and the URLs
#   bash scripts/stack.sh down [--volumes]   remove the stack (--volumes: its data and state too)
# Settings (environment): SCALEWISE_STACK (stack name, default scalewise), SCALEWISE_WORKLOADS (workloads
# folder mounted into the workers and receivers, default ./workloads), SCALEWISE_STACK_RULES (a
# Prometheus rules file instead of deployments/stack/rules.yml), STACK_PREFECT_PORT (14200),
# STACK_PROMETHEUS_PORT (19090), STACK_ALERTMANAGER_PORT (19093),
# STACK_WORKERS (2), STACK_WEBHOOKS (2), SCALEWISE_STACK_TIMEOUT (seconds to wait for `up`, 900).
# Configs and generated secrets live in ${SCALEWISE_STATE:-~/.scalewise}/stack/<name>/ (secrets 0600,
# never printed); `up` writes <that>/env, which `status`/`down` and your shell can source
# (it sets PREFECT_API_URL for the scalewise CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
[ $# -gt 0 ] && shift
name=${SCALEWISE_STACK:-scalewise}
[[ "$name" =~ ^[a-z][a-z0-9-]{0,39}$ ]] || { echo "SCALEWISE_STACK: '$name' is not a name (a-z, 0-9, -; at most 40)" >&2; exit 2; }
dir=${SCALEWISE_STATE:-$HOME/.scalewise}/stack/$name

urls() {
  echo "Prefect UI/API: http://127.0.0.1:$STACK_PREFECT_PORT (export PREFECT_API_URL=http://127.0.0.1:$STACK_PREFECT_PORT/api)"
  echo "Prometheus: http://127.0.0.1:$STACK_PROMETHEUS_PORT  Alertmanager: http://127.0.0.1:$STACK_ALERTMANAGER_PORT"
  echo "environment: source $dir/env"
}

# Wait until $1 (a command) succeeds, up to the deadline; $2 names what is awaited.
deadline=$((SECONDS + ${SCALEWISE_STACK_TIMEOUT:-900}))
await() {
  until eval "$1" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for $2; services:" >&2
      docker stack services "$name" >&2 || true
      docker stack ps --no-trunc "$name" --format '{{.Name}} {{.CurrentState}} {{.Error}}' 2>&1 | head -30 >&2 || true
      return 1
    fi
    sleep 1
  done
}

running() {  # service $1 has $2 running tasks
  [ "$(docker service ps "${name}_$1" --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running')" -ge "$2" ]
}

online_workers() {  # the pool "scalewise" has at least $1 online workers
  local n
  n=$(curl -fsS -X POST -H 'Content-Type: application/json' -d '{}' \
    "http://127.0.0.1:$STACK_PREFECT_PORT/api/work_pools/scalewise/workers/filter" | grep -o '"status":"ONLINE"' | wc -l)
  [ "$n" -ge "$1" ]
}

case "$cmd" in
  up)
    bash scripts/start-docker.sh >/dev/null
    eval "$(bash scripts/build-stack-images.sh | grep -E '^(SCALEWISE_IMAGE|STACK_INFRA_IMAGE)=')"
    workloads=$(cd "${SCALEWISE_WORKLOADS:-workloads}" && pwd) \
      || { echo "SCALEWISE_WORKLOADS: ${SCALEWISE_WORKLOADS:-workloads} is not a folder" >&2; exit 2; }
    rules=${SCALEWISE_STACK_RULES:-deployments/stack/rules.yml}
    [ -f "$rules" ] || { echo "SCALEWISE_STACK_RULES: $rules is not a file" >&2; exit 2; }
    mkdir -p "$dir/etc" "$dir/secrets"
    chmod 700 "$dir/secrets"
    install -m 0644 deployments/stack/prometheus.yml deployments/stack/alertmanager.yml \
      deployments/stack/webhook.yaml "$dir/etc/"
    install -m 0644 "$rules" "$dir/etc/rules.yml"
    chmod 0755 "$dir/etc"
    for s in postgres_password webhook_token; do  # generated once, kept (a secret cannot change in place)
      [ -s "$dir/secrets/$s" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secrets/$s")
    done
    {
      echo "export SCALEWISE_STACK=$name"
      echo "export SCALEWISE_IMAGE=$SCALEWISE_IMAGE STACK_INFRA_IMAGE=$STACK_INFRA_IMAGE"
      echo "export STACK_WORKLOADS=$workloads STACK_ETC=$dir/etc STACK_SECRETS=$dir/secrets"
      echo "export STACK_DOCKER_GID=$(stat -c %g /var/run/docker.sock)"
      echo "export STACK_WORKERS=${STACK_WORKERS:-2} STACK_WEBHOOKS=${STACK_WEBHOOKS:-2}"
      echo "export STACK_PREFECT_PORT=${STACK_PREFECT_PORT:-14200}"
      echo "export STACK_PROMETHEUS_PORT=${STACK_PROMETHEUS_PORT:-19090} STACK_ALERTMANAGER_PORT=${STACK_ALERTMANAGER_PORT:-19093}"
      echo "export PREFECT_API_URL=http://127.0.0.1:${STACK_PREFECT_PORT:-14200}/api"
      echo "export SCALEWISE_WORKLOADS=$workloads"
    } >"$dir/env"
    # shellcheck disable=SC1091
    . "$dir/env"
    docker stack deploy --detach=true --resolve-image never -c deployments/stack.yaml "$name" >/dev/null
    await "curl -fsS http://127.0.0.1:$STACK_PREFECT_PORT/api/health" "the Prefect server"
    await "docker service ps ${name}_setup --format '{{.CurrentState}}' | head -1 | grep -q ^Complete" \
      "the setup job (work pool, deployments, automations)"
    await "online_workers $STACK_WORKERS" "$STACK_WORKERS online workers"
    await "running webhook $STACK_WEBHOOKS" "$STACK_WEBHOOKS webhook receivers"
    await "running prometheus 1 && running alertmanager 1" "Prometheus and Alertmanager"
    echo "stack $name is up"
    urls
    ;;
  status)
    [ -f "$dir/env" ] || { echo "no stack $name (no $dir/env): bash scripts/stack.sh up" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$dir/env"
    docker stack services "$name"
    urls
    ;;
  down)
    volumes=0
    for a in "$@"; do
      case "$a" in --volumes) volumes=1 ;; *) echo "down: unknown argument '$a' (--volumes)" >&2; exit 2 ;; esac
    done
    docker stack rm "$name" >/dev/null 2>&1 || true
    # removal is asynchronous: wait until its containers and network are gone
    await "[ -z \"\$(docker ps -aq --filter label=com.docker.stack.namespace=$name)\" ] && [ -z \"\$(docker network ls -q --filter label=com.docker.stack.namespace=$name)\" ]" \
      "the stack's containers and network to go"
    if ((volumes)); then
      docker volume ls -q --filter "label=com.docker.stack.namespace=$name" | xargs -r docker volume rm >/dev/null
      rm -rf "$dir"
    fi
    echo "stack $name is down"
    ;;
  *)
    echo "usage: bash scripts/stack.sh up | status | down [--volumes]" >&2
    exit 2
    ;;
esac
