#!/usr/bin/env bash
# Build the local images the example and the tests use, from Debian's busybox-static:
#   scalewise/busybox:1 and :2  serve HTTP on 8080 (index says "v1"/"v2"); healthy
#   scalewise/busybox:broken    never serves, so an HTTP health check fails
set -euo pipefail
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-static is not installed: run scripts/install-system.sh" >&2; exit 1; }
build() {  # tag, index text, cmd-json
  local tag=$1 text=$2 cmd=$3
  if docker image inspect "$tag" >/dev/null 2>&1; then return; fi
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc"
  cp "$bb" "$root/bin/busybox"
  for a in sh httpd wget sleep cat echo ls test true false nc ps kill env; do ln -s busybox "$root/bin/$a"; done
  echo "$text" >"$root/www/index.html"
  echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
  tar -C "$root" -c . | docker import -c "CMD $cmd" - "$tag" >/dev/null
  rm -rf "$root"
  echo "built $tag"
}
serve='["/bin/httpd","-f","-p","8080","-h","/www"]'
build scalewise/busybox:1 v1 "$serve"
build scalewise/busybox:2 v2 "$serve"
build scalewise/busybox:3 v3 "$serve"
build scalewise/busybox:broken broken '["/bin/sleep","1000000"]'
