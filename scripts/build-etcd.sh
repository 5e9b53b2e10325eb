#!/usr/bin/env bash
# Usage: build-etcd.sh ETCD_VERSION OUTDIR
# Builds etcd and etcdctl (static, -s -w) into OUTDIR, for the registry.k8s.io/etcd test image. Their
# modules' go.mod files have relative replace directives, so 'go install pkg@version' refuses them; they
# are built as dependencies of a throwaway module instead, leaving hakube's go.mod and go.sum untouched.
set -euo pipefail
ver=$1 out=$(realpath -m "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dir=$(cd "$tmp" && go mod download -json "go.etcd.io/etcd/server/v3@$ver" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[[ -n $dir ]] || { echo "go mod download go.etcd.io/etcd/server/v3@$ver failed" >&2; exit 1; }
printf 'module hakube.local/etcd-image\n\ngo %s\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 %s\n\tgo.etcd.io/etcd/etcdctl/v3 %s\n)\n' \
  "$(go mod edit -json "$dir/go.mod" | sed -n 's/^\t"Go": "\(.*\)",$/\1/p')" "$ver" "$ver" >"$tmp/go.mod"
mkdir -p "$out"
cd "$tmp"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0
go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
go build -ldflags "-s -w" -o "$out/etcdctl" go.etcd.io/etcd/etcdctl/v3
