#!/usr/bin/env bash
# Build the images of the stack (deployments/stack.yaml) without a registry (idempotent, cached):
#   scalewise/scalewise:<version>  by scripts/build-scalewise-image.sh (Prefect server, workers, webhook)
#   scalewise/stack-infra:<hash>   deployments/stack/infra.Dockerfile on scalewise/debian-base:bookworm:
#                                  PostgreSQL, Redis, Prometheus, Alertmanager from Debian's packages
# The infra image is tagged with the hash of its inputs (base image id, Dockerfile, entrypoint) and is
# rebuilt only when they change. Prints "SCALEWISE_IMAGE=<tag>" and "STACK_INFRA_IMAGE=<tag>".
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${SCALEWISE_CACHE:-$HOME/.cache/scalewise}
mkdir -p "$cache"
app=$(bash scripts/build-scalewise-image.sh | tail -1)
base=scalewise/debian-base:bookworm
hash=$( { docker image inspect -f '{{.Id}}' "$base"; sha256sum deployments/stack/infra.Dockerfile \
  deployments/stack/infra-entrypoint.sh; } | sha256sum | cut -c1-16)
infra=scalewise/stack-infra:$hash
exec 9>"$cache/build-stack-infra.lock"
flock 9
if ! docker image inspect "$infra" >/dev/null 2>&1; then
  t0=$SECONDS
  ctx=$(mktemp -d /var/tmp/scalewise-stack.XXXXXX)
  trap 'rm -rf "$ctx"' EXIT
  cp deployments/stack/infra.Dockerfile "$ctx/Dockerfile"
  cp deployments/stack/infra-entrypoint.sh "$ctx/"
  docker build -q --build-arg "BASE=$base" --label "scalewise.inputs=$hash" -t "$infra" "$ctx" \
    >"$cache/stack-infra.log" 2>&1 \
    || { echo "building $infra failed:" >&2; tail -30 "$cache/stack-infra.log" >&2; exit 1; }
  # only the current infra image is kept
  docker image ls --format '{{.Repository}}:{{.Tag}}' scalewise/stack-infra | grep -vxF "$infra" \
    | xargs -r docker image rm >/dev/null 2>&1 || true
  echo "built $infra in $((SECONDS - t0))s" >&2
fi
echo "SCALEWISE_IMAGE=$app"
echo "STACK_INFRA_IMAGE=$infra"
