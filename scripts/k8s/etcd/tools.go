//go:build tools

// Package tools pins the etcd server main package built by scripts/k8s/build.sh.
package tools

import _ "go.etcd.io/etcd/server/v3"
