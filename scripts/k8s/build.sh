#!/usr/bin/env bash
# Build the Kubernetes test control plane binaries from Go modules:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                              (go.etcd.io/etcd/server/v3)
#   kwok                                                              (sigs.k8s.io/kwok)
#
# Output: ${SCALEWISE_CACHE:-$HOME/.cache/scalewise}/k8s/<versions-key>/bin/
# The last line printed on stdout is that bin directory.
# Idempotent: if every binary is already present, nothing is built.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Pinned versions. KUBE_VERSION / ETCD_VERSION must match the wrapper go.mod files.
KUBE_VERSION="v1.34.4"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.8.0"

CACHE_ROOT="${SCALEWISE_CACHE:-$HOME/.cache/scalewise}"
KEY="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
BIN_DIR="${CACHE_ROOT}/k8s/${KEY}/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

log() { echo "[k8s-build] $*" >&2; }

all_present() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
  return 0
}

if all_present; then
  log "cache hit: ${BIN_DIR}"
  echo "${BIN_DIR}"
  exit 0
fi

GO="$(command -v go || true)"
if [[ -z "${GO}" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "${GO}" ]]; then
  log "error: go toolchain not found (need go >= 1.26)"
  exit 1
fi

grep -q "k8s.io/kubernetes ${KUBE_VERSION}" "${HERE}/kube/go.mod" \
  || { log "error: kube/go.mod does not require k8s.io/kubernetes ${KUBE_VERSION}"; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" "${HERE}/etcd/go.mod" \
  || { log "error: etcd/go.mod does not require etcd server ${ETCD_VERSION}"; exit 1; }

mkdir -p "${BIN_DIR}"
# Serialize concurrent cold builds (e.g. two pytest runs on a fresh machine).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${CACHE_ROOT}/k8s/.build.lock"
  flock 9
  if all_present; then
    log "cache hit (built by a concurrent run): ${BIN_DIR}"
    echo "${BIN_DIR}"
    exit 0
  fi
fi
# Build into a staging dir and move binaries into place only on success, so an
# interrupted build never leaves a half-written binary that looks like a cache hit.
STAGE="$(mktemp -d "${CACHE_ROOT}/k8s/.stage.XXXXXX")"
trap 'rm -rf "${STAGE}"' EXIT

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
BUILD_FLAGS=(-trimpath "-ldflags=-s -w")

step() {
  # step <name> <command...>: run a build step and report its elapsed seconds.
  local name="$1"; shift
  local t0=${SECONDS}
  log "building ${name} ..."
  "$@"
  log "built ${name} in $((SECONDS - t0))s"
}

build_kube() {
  local missing=() b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "${BIN_DIR}/${b}" ]] || missing+=("k8s.io/kubernetes/cmd/${b}")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  (cd "${HERE}/kube" && "${GO}" build "${BUILD_FLAGS[@]}" -o "${STAGE}/" "${missing[@]}")
  mv -f "${STAGE}"/kube* "${BIN_DIR}/"
}

build_etcd() {
  [[ -x "${BIN_DIR}/etcd" ]] && return 0
  (cd "${HERE}/etcd" && "${GO}" build "${BUILD_FLAGS[@]}" -o "${STAGE}/etcd" go.etcd.io/etcd/server/v3)
  mv -f "${STAGE}/etcd" "${BIN_DIR}/etcd"
}

build_kwok() {
  [[ -x "${BIN_DIR}/kwok" ]] && return 0
  # kwok's go.mod has no replace directives, so `go install pkg@version` works.
  GOBIN="${STAGE}" GOFLAGS="-buildvcs=false" "${GO}" install "${BUILD_FLAGS[@]}" \
    "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  mv -f "${STAGE}/kwok" "${BIN_DIR}/kwok"
}

T0=${SECONDS}
step "etcd ${ETCD_VERSION}" build_etcd
step "kwok ${KWOK_VERSION}" build_kwok
step "kubernetes ${KUBE_VERSION}" build_kube
log "all binaries ready in $((SECONDS - T0))s: ${BIN_DIR}"
echo "${BIN_DIR}"
