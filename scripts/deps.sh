#!/usr/bin/env bash
# Installs the Debian packages a fresh machine lacks: 'deps.sh node' what
# building and running a node needs ('make run'), 'deps.sh test' that and what
# the tests need, then the Go modules ('make test'). Installed packages are
# left alone, so a second run costs a few stats.
set -euo pipefail
mode=${1:?usage: deps.sh node|test}
need=()
# The node bundle ('make build'): runc is built with cgo against libseccomp, the pause image with gcc -static.
compgen -G "/usr/lib/*/pkgconfig/libseccomp.pc" >/dev/null || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v gcc >/dev/null || need+=(gcc)
compgen -G "/usr/lib/*/libc.a" >/dev/null || need+=(libc6-dev)
# A running node: kube-proxy and flannel program iptables; kube-proxy clears stale UDP flows with conntrack.
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
if [[ $mode == test ]]; then
  # kubectl ships with this machine image (it is not in Debian's archive); the tests need the real one.
  command -v kubectl >/dev/null || { echo "kubectl is required on PATH" >&2; exit 1; }
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql) # external-datastore tests
  command -v ip >/dev/null || need+=(iproute2)                                     # namespace hosts
  command -v etcd >/dev/null || need+=(etcd-server)                                # the benchmarks' external-etcd peer
  # The conformance images: busybox is built from its source (curl, bzip2, make).
  command -v curl >/dev/null || need+=(curl)
  command -v bzip2 >/dev/null || need+=(bzip2)
  command -v make >/dev/null || need+=(make)
  command -v systemd-analyze >/dev/null || need+=(systemd)                          # checks the units hakube install writes
fi
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "hakube needs these Debian packages: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ $mode == test ]]; then
  go mod download
fi
