#!/usr/bin/env bash
# Usage: build-kube-main.sh KUBE_VERSION PACKAGE OUT [LDFLAGS]
# Builds a package main of the k8s.io/kubernetes module (e.g. test/images/agnhost) statically, in a
# throwaway module, so hakube's go.mod and go.sum stay untouched: the package may import modules
# hakube's go.sum lacks. The throwaway module pins every staging module (k8s.io/api, ...) to the
# matching v0 version, as hakube's go.mod does; everything else comes from kubernetes' own go.mod.
set -euo pipefail
kube=$1 pkg=$2 out=$3 ldflags=${4:-}
staging=v0.${kube#v1.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dir=$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[[ -n $dir ]] || { echo "go mod download k8s.io/kubernetes@$kube failed" >&2; exit 1; }
{
  echo "module hakube.local/kube-main"
  echo "go $(go mod edit -json "$dir/go.mod" | sed -n 's/^\t"Go": "\(.*\)",$/\1/p')"
  echo "require k8s.io/kubernetes $kube"
  # Each staging module that kubernetes replaces with ./staging/src/... gets the published v0 version.
  go mod edit -json "$dir/go.mod" | sed -n 's|^.*"Path": "\./staging/src/\(.*\)"$|\1|p' |
    while read -r m; do echo "replace $m => $m $staging"; done
} >"$tmp/go.mod"
out=$(realpath -m "$out")
cd "$tmp"
GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$out" "$pkg"
