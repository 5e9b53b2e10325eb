# hakube build, run and test entry points.
KUBE_VERSION := v1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# -s -w drops the symbol table and DWARF (369 -> 260 MB with the node wing); panics and SIGQUIT dumps keep
# their function names and lines.
LDFLAGS := -s -w -X github.com/hakube/hakube/internal/version.Version=$(VERSION) \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION)+hakube \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION)+hakube \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=37
BIN := bin/hakube
# A real S3-compatible server for the snapshot tests (built from the module proxy).
VERSITYGW := bin/versitygw
VERSITYGW_VERSION := v1.8.0
DATA_DIR ?= /var/lib/hakube

.PHONY: build bundle run test node-deps test-deps unit e2e robustness bench bench-quick lint fuzz clean

build: bundle
	go build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/hakube

# --- Node bundle: what a node runs beside bin/hakube and is not linked into it, each built from the Go
# module proxy (go install leaves the touch to make: it does not rewrite an up-to-date binary).
# Every artifact is a file target; its version is a prerequisite through a stamp file
# bin/.versions/NAME-VERSION, so changing a version rebuilds only that artifact and a second
# 'make build' does nothing.
RUNC_VERSION := v1.5.2
CONTAINERD_VERSION := v2.4.2
CRICTL_VERSION := v1.37.0
CNI_PLUGINS_VERSION := v1.9.1
PAUSE_VERSION := 3.10
COREDNS_VERSION := v1.15.0
AGNHOST_VERSION := 2.66

RUNC := bin/runc
SHIM := bin/containerd-shim-runc-v2
CRICTL := bin/crictl
CNI_PLUGINS := bin/cni/bridge bin/cni/host-local bin/cni/loopback bin/cni/portmap
MKIMAGE := bin/mkimage
IMAGES := bin/images/pause.tar bin/images/coredns.tar
TEST_IMAGES := bin/test-images/agnhost.tar
BUNDLE := $(RUNC) $(SHIM) $(CRICTL) $(CNI_PLUGINS) $(IMAGES)
VERSIONS := bin/.versions
# Go binaries that are built only to be packed into an image.
IMAGE_BIN := bin/image-bin

bundle: $(BUNDLE)

$(VERSIONS)/%:
	@mkdir -p $(@D) && touch $@

# runc needs cgo and the seccomp tag: containerd gives every sandbox a seccomp profile, and a runc
# without seccomp support fails it ("seccomp: config provided but seccomp not supported").
$(RUNC): $(VERSIONS)/runc-$(RUNC_VERSION)
	@pkg-config --exists libseccomp || { echo "$@ needs libseccomp's headers: apt-get install libseccomp-dev" >&2; exit 1; }
	GOBIN=$(CURDIR)/bin CGO_ENABLED=1 go install -tags seccomp github.com/opencontainers/runc@$(RUNC_VERSION)
	@touch $@

# containerd finds its runc v2 shim on PATH as containerd-shim-runc-v2; the shim daemonizes and outlives
# containerd, so it is a binary of its own.
$(SHIM): $(VERSIONS)/containerd-$(CONTAINERD_VERSION)
	GOBIN=$(CURDIR)/bin CGO_ENABLED=0 go install -ldflags "-X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)" \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD_VERSION)
	@touch $@

$(CRICTL): $(VERSIONS)/crictl-$(CRICTL_VERSION)
	GOBIN=$(CURDIR)/bin CGO_ENABLED=0 go install -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRICTL_VERSION)" \
		sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)
	@touch $@

# The CNI plugins that a node's bridge conflist names (bridge, host-local, portmap, loopback).
# v1.10 needs a newer Go than ours.
CNI_PKG := github.com/containernetworking/plugins/plugins
$(CNI_PLUGINS) &: $(VERSIONS)/cni-plugins-$(CNI_PLUGINS_VERSION)
	GOBIN=$(CURDIR)/bin/cni CGO_ENABLED=0 go install \
		-ldflags "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(CNI_PLUGINS_VERSION)" \
		$(foreach p,main/bridge ipam/host-local main/loopback meta/portmap,$(CNI_PKG)/$(p)@$(CNI_PLUGINS_VERSION))
	@touch $(CNI_PLUGINS)

# --- Images: no registry is reachable, so each image is an OCI layout tarball made by hack/mkimage
# (one uncompressed layer, deterministic), for 'ctr images import' into namespace k8s.io. The Go
# binaries in images are linked with -s -w (no symbol table or DWARF): half the size of each layer.
$(MKIMAGE): $(wildcard hack/mkimage/*.go)
	go build -o $@ ./hack/mkimage

# pause (the sandbox image) is a C program in the kubernetes module; static, for an image with no libc.
$(IMAGE_BIN)/pause: $(VERSIONS)/kubernetes-$(KUBE_VERSION)
	@mkdir -p $(@D)
	dir=$$(cd / && go mod download -json k8s.io/kubernetes@$(KUBE_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && \
		gcc -static -O2 -o $@ "$$dir/build/pause/linux/pause.c"

bin/images/pause.tar: $(IMAGE_BIN)/pause $(MKIMAGE)
	@mkdir -p $(@D)
	$(MKIMAGE) -o $@ -name docker.io/hakube/pause:$(PAUSE_VERSION) -entrypoint /pause $<=/pause

# CoreDNS without cgo: a cgo build is linked dynamically and cannot start in an image with no libc.
$(IMAGE_BIN)/coredns: $(VERSIONS)/coredns-$(COREDNS_VERSION)
	GOBIN=$(CURDIR)/$(IMAGE_BIN) CGO_ENABLED=0 go install -ldflags "-s -w" github.com/coredns/coredns@$(COREDNS_VERSION)
	@touch $@

bin/images/coredns.tar: $(IMAGE_BIN)/coredns $(MKIMAGE)
	@mkdir -p $(@D)
	$(MKIMAGE) -o $@ -name docker.io/hakube/coredns:$(COREDNS_VERSION:v%=%) -entrypoint /coredns $<=/coredns

# agnhost (test workloads only) is a package main of the kubernetes module that imports a module
# hakube's go.sum lacks; the script builds it in a throwaway module, leaving go.mod alone.
$(IMAGE_BIN)/agnhost: $(VERSIONS)/kubernetes-$(KUBE_VERSION) scripts/build-kube-main.sh
	./scripts/build-kube-main.sh $(KUBE_VERSION) k8s.io/kubernetes/test/images/agnhost $@ "-s -w -X main.Version=$(AGNHOST_VERSION)"
	@touch $@

bin/test-images/agnhost.tar: $(IMAGE_BIN)/agnhost $(MKIMAGE)
	@mkdir -p $(@D)
	$(MKIMAGE) -o $@ -name docker.io/hakube/agnhost:$(AGNHOST_VERSION) -entrypoint /agnhost $<=/agnhost

# A single server on the embedded SQLite datastore.
run: node-deps build
	$(BIN) server --data-dir $(DATA_DIR)

lint:
	@test -z "$$(gofmt -l cmd internal test bench hack)" || (gofmt -l cmd internal test bench hack; exit 1)
	go vet ./...

unit:
	go test ./internal/...

$(VERSITYGW):
	GOBIN=$(CURDIR)/bin go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

# Integration and multi-host tests use the binary built once by 'build'.
# The robustness short matrix runs on etcd with the rest, then once more on Dqlite.
e2e: build $(TEST_IMAGES) $(VERSITYGW)
	HAKUBE_BIN=$(CURDIR)/$(BIN) HAKUBE_VERSITYGW=$(CURDIR)/$(VERSITYGW) go test -p 1 -count=1 -timeout 40m -v ./test/...
	HAKUBE_BIN=$(CURDIR)/$(BIN) ROBUSTNESS_DATASTORE=dqlite go test -count=1 -timeout 20m -v -run TestRobustness ./test/robustness/

# What a node (make run) and the tests (make test) need on a fresh machine: Debian packages, Go modules.
node-deps:
	./scripts/deps.sh node

test-deps:
	./scripts/deps.sh test

test: test-deps
	$(MAKE) lint unit e2e bench-quick

# Fault-injection runs on SERVERS servers of DATASTORE (etcd or dqlite): ITER iterations of every scenario
# (or of FAULTS, comma-separated), TRAFFIC seconds of traffic before and after each fault.
DATASTORE ?= etcd
SERVERS ?= 3
ITER ?= 20
TRAFFIC ?= 5
robustness: build
	HAKUBE_BIN=$(CURDIR)/$(BIN) ROBUSTNESS_ITER=$(ITER) ROBUSTNESS_TRAFFIC=$(TRAFFIC) ROBUSTNESS_FAULTS=$(FAULTS) ROBUSTNESS_SERVERS=$(SERVERS) ROBUSTNESS_DATASTORE=$(DATASTORE) \
		go test -count=1 -timeout 600m -v -run TestRobustness ./test/robustness/

# Benchmarks: hakube and its peers (Debian's etcd-server, kine on SQLite) side by side; figures are
# reported in bench/results/<date>-<host>.{json,md,png}, never asserted. BENCH_DURATION is the time per
# throughput row (default 3s), BENCH_REPS the repetitions per operation (default 10).
# bench-quick (under 3 min, part of 'make test') keeps the harness working; it writes to bench/results/quick/.
KINE := bin/kine
$(KINE): go.mod
	go build -o $(KINE) github.com/k3s-io/kine

BENCH_ENV = HAKUBE_BIN=$(CURDIR)/$(BIN) HAKUBE_KINE=$(CURDIR)/$(KINE) HAKUBE_BENCH=1 BENCH_COMMIT=$(VERSION)
bench: build $(KINE)
	$(BENCH_ENV) BENCH_DURATION=$(BENCH_DURATION) BENCH_REPS=$(BENCH_REPS) go test -count=1 -timeout 60m -v -run TestBench ./bench/

bench-quick: build $(KINE)
	$(BENCH_ENV) go test -count=1 -timeout 10m -v -run TestBench ./bench/ -args -quick

fuzz:
	go test ./internal/token -run '^$$' -fuzz FuzzParse -fuzztime 60s

clean:
	rm -rf bin
