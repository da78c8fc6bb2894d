#!/usr/bin/env bash
# Install the system packages scalewise's run and test commands need (Debian). Idempotent.
set -euo pipefail
pkgs=(docker.io busybox-static prometheus prometheus-alertmanager postgresql iproute2 procps stress-ng debootstrap chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus packages start services through their postinst where systemd runs; we start
# our own instances on loopback instead, so nothing else is needed here. Likewise PostgreSQL: the
# local Prefect server runs a cluster of its own under $SCALEWISE_STATE (src/scalewise/local.py).
