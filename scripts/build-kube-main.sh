#!/usr/bin/env bash
# Usage: build-kube-main.sh [-test] [-hakube] KUBE_VERSION PACKAGE OUT [LDFLAGS]
# Builds a package main of the k8s.io/kubernetes module (e.g. test/images/agnhost) statically, in a
# throwaway module, so hakube's go.mod and go.sum stay untouched: the package may import modules
# hakube's go.sum lacks. The throwaway module pins every staging module (k8s.io/api, ...) to the
# matching v0 version, as hakube's go.mod does; everything else comes from kubernetes' own go.mod.
# -test compiles the package's tests instead (go test -c), e.g. test/e2e into e2e.test.
# -hakube starts the throwaway module from a copy of hakube's go.mod and go.sum, and keeps cgo as
# hakube's build has it: the Kubernetes packages hakube links then come out of its build cache
# (e2e.test: ~1 min of CPU instead of 15 once bin/hakube is built). The binary is not static.
# ALSO="PACKAGE=OUT ..." builds more packages in the same module, so they link the very versions the
# first one does (the ginkgo CLI must match the ginkgo inside e2e.test).
set -euo pipefail
build=(go build) from_hakube=
while [[ ${1:-} == -* ]]; do
  case $1 in
  -test) build=(go test -c) ;;
  -hakube) from_hakube=1 ;;
  *) echo "build-kube-main.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
kube=$1 pkg=$2 out=$3 ldflags=${4:-}
staging=v0.${kube#v1.}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -n $from_hakube ]]; then
  cp "$root/go.mod" "$root/go.sum" "$tmp/"
  (cd "$tmp" && go mod edit -module hakube.local/kube-main -droptool github.com/k3s-io/kine)
else
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
  export CGO_ENABLED=0
fi
out=$(realpath -m "$out")
also=()
for extra in ${ALSO:-}; do also+=("${extra%%=*}=$(realpath -m "${extra#*=}")"); done
cd "$tmp"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
"${build[@]}" -ldflags "$ldflags" -o "$out" "$pkg"
for extra in "${also[@]}"; do
  go build -ldflags "-s -w" -o "${extra#*=}" "${extra%%=*}"
done
