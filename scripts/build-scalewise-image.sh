#!/usr/bin/env bash
# Build the scalewise images without a registry (idempotent, cached):
#   scalewise/debian-base:bookworm  a Debian root filesystem from debootstrap (minbase + python3,
#                                   python3-venv, ca-certificates), from the mirror apt uses, imported
#                                   with `docker import`
#   scalewise/scalewise:<version>   deployments/scalewise.Dockerfile on that base: scalewise and its
#                                   pinned dependencies installed from a wheelhouse built here on the
#                                   host from requirements.lock (no index inside the build), bytecode
#                                   compiled, the Prefect project layer (flows/, tasks/, prefect.yaml)
#                                   under /opt/scalewise, user 10001, a HEALTHCHECK
# Each image carries a label with the hash of its inputs; a build is skipped when the image exists
# with the same hash. The wheelhouse is cached under $SCALEWISE_CACHE (default ~/.cache/scalewise),
# keyed by requirements.lock. Prints the image tag on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${SCALEWISE_CACHE:-$HOME/.cache/scalewise}
base_tag=scalewise/debian-base:bookworm
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
tag=${SCALEWISE_IMAGE:-scalewise/scalewise:$version}
suite=bookworm
include=python3,python3-venv,ca-certificates
mkdir -p "$cache"
exec 9>"$cache/build-image.lock"
flock 9  # one build at a time (the test setup and a test may both ask)

label_of() {  # image -> its scalewise.inputs label, or nothing
  docker image inspect -f '{{index .Config.Labels "scalewise.inputs"}}' "$1" 2>/dev/null || true
}

# The Debian mirror apt already uses for $suite (deb822 .sources files or one-line sources.list).
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" 'BEGIN{RS=""; FS="\n"}
      { uri=""; ok=0
        for (i=1;i<=NF;i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri=a[2] }
          if ($i ~ /^Suites:/) { n=split($i, b, /[ \t]+/); for (j=2;j<=n;j++) if (b[j]==s) ok=1 }
        }
        if (ok && uri != "") { print uri; exit } }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk -v s="$suite" '$1=="deb" && $0 !~ /security/ { for (i=2;i<=NF;i++) if ($i==s) { print $(i-1); exit } }'
}

# 1. The base image.
src=$(mirror | head -1 || true)
[ -n "$src" ] || { echo "no apt source for $suite found under /etc/apt" >&2; exit 1; }
base_hash=$(printf 'v1 minbase %s %s %s\n' "$suite" "$include" "$src" | sha256sum | cut -c1-16)
if [ "$(label_of "$base_tag")" != "$base_hash" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed: run scripts/install-system.sh" >&2; exit 1; }
  root=$(mktemp -d /var/tmp/scalewise-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  t0=$SECONDS
  debootstrap --variant=minbase --include="$include" "$suite" "$root" "$src" >"$cache/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; last lines of $cache/debootstrap.log:" >&2; tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  tar -C "$root" -c . | docker import \
    -c "LABEL scalewise.inputs=$base_hash" -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base_tag" >/dev/null
  rm -rf "$root"
  trap - EXIT
  echo "built $base_tag in $((SECONDS - t0))s" >&2
fi

# 2. The scalewise image: skipped when nothing that goes into it changed.
inputs=(pyproject.toml requirements.lock prefect.yaml deployments/scalewise.Dockerfile
        deployments/healthcheck.py deployments/serve.py deployments/triggers.py deployments/warm_start.py
        deployments/pools.py deployments/apply_automations.py deployments/automations.yaml
        scripts/build-scalewise-image.sh)
app_hash=$( {
  docker image inspect -f '{{.Id}}' "$base_tag"
  find src/scalewise flows tasks -name '*.py' -type f | sort | xargs sha256sum
  sha256sum "${inputs[@]}"
} | sha256sum | cut -c1-16)
if [ "$(label_of "$tag")" = "$app_hash" ]; then
  echo "$tag"
  exit 0
fi
t0=$SECONDS
# The build context: scalewise/ its wheel (only the scalewise package), deps/ its dependencies'
# wheels, project/ the Prefect project layer.
ctx=$(mktemp -d /var/tmp/scalewise-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/deps" "$ctx/scalewise" "$ctx/project/deployments"
uv build -q --wheel -o "$ctx/scalewise" . >"$cache/wheel.log" 2>&1 \
  || { echo "building the scalewise wheel failed:" >&2; tail -20 "$cache/wheel.log" >&2; exit 1; }
# The wheelhouse: every runtime dependency as a wheel, for the base image's exact Python (markers such
# as python_full_version matter), pinned by requirements.lock; cached by the lock, the dependency list
# and that Python version.
py=$(docker run --rm --entrypoint python3 "$base_tag" -c 'import platform; print(platform.python_version())')
lock_hash=$( (echo "v2 $py"; sha256sum requirements.lock; sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml) \
  | sha256sum | cut -c1-16)
wheels=$cache/wheelhouse-$lock_hash
if [ ! -f "$wheels/.complete" ]; then
  find "$cache" -maxdepth 1 -name "wheelhouse-*" -exec rm -rf {} +  # only the current one is kept
  mkdir -p "$wheels"
  # Resolve what the scalewise wheel needs for that Python (markers evaluated for it, every version
  # constrained to the lock), then download exactly those wheels.
  echo "scalewise @ file://$(ls "$ctx"/scalewise/scalewise-*.whl)" >"$ctx/want.txt"
  { uv pip compile -q --no-header --no-annotate --python-version "$py" --python-platform x86_64-manylinux_2_36 \
      -c requirements.lock "$ctx/want.txt" | grep -v '^scalewise @' >"$wheels/requirements.txt" \
    && uv run -q --no-project -p 3.11 --with pip -- python -m pip download -q --disable-pip-version-check \
      --no-deps --only-binary=:all: --python-version "$py" --implementation cp --abi cp311 \
      -r "$wheels/requirements.txt" -d "$wheels"; } >"$cache/wheelhouse.log" 2>&1 \
    || { echo "building the wheelhouse failed:" >&2; tail -20 "$cache/wheelhouse.log" >&2; exit 1; }
  rm -f "$wheels"/scalewise-*.whl
  # Every wheel must be pinned by the lock (name==version, names normalised).
  pinned=$(sed -E 's/^([^=]+)==(.*)$/\1 \2/' requirements.lock | awk '{n=tolower($1); gsub(/[-_.]+/, "-", n); print n "==" $2}')
  for w in "$wheels"/*.whl; do
    n=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g')
    v=$(basename "$w" | cut -d- -f2)
    grep -qxF "$n==$v" <<<"$pinned" || { echo "wheel $(basename "$w") is not pinned in requirements.lock" >&2; exit 1; }
  done
  touch "$wheels/.complete"
fi
cp "$wheels"/*.whl "$wheels/requirements.txt" "$ctx/deps/"
rm -f "$ctx/want.txt"
cp -r flows tasks prefect.yaml "$ctx/project/"
cp deployments/serve.py deployments/triggers.py deployments/warm_start.py deployments/healthcheck.py deployments/pools.py \
  deployments/apply_automations.py deployments/automations.yaml "$ctx/project/deployments/"
find "$ctx/project" -name __pycache__ -prune -exec rm -rf {} +
cp deployments/scalewise.Dockerfile "$ctx/Dockerfile"
docker build -q --build-arg "BASE=$base_tag" --label "scalewise.inputs=$app_hash" -t "$tag" "$ctx" >"$cache/image.log" 2>&1 \
  || { echo "docker build failed:" >&2; tail -30 "$cache/image.log" >&2; exit 1; }
rm -rf "$ctx"
trap - EXIT
echo "built $tag in $((SECONDS - t0))s" >&2
echo "$tag"
