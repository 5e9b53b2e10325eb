# hakube build, run and test entry points.
KUBE_VERSION := v1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# -s -w drops the symbol table and DWARF (369 -> 260 MB with the node wing); panics and SIGQUIT dumps keep
# their function names and lines.
# kube_version_x is the -X flags that give a binary of Kubernetes packages the version $(1).
kube_version_x = $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(1) -X $(p).gitMajor=1 -X $(p).gitMinor=37)
LDFLAGS := -s -w -X github.com/hakube/hakube/internal/version.Version=$(VERSION) $(call kube_version_x,$(KUBE_VERSION)+hakube)
BIN := bin/hakube
# A real S3-compatible server for the snapshot tests (built from the module proxy).
VERSITYGW := bin/versitygw
VERSITYGW_VERSION := v1.8.0
DATA_DIR ?= /var/lib/hakube

.PHONY: build bundle run test node-deps test-deps unit e2e robustness bench bench-quick bench-scale lint fuzz clean \
	conformance conformance-quick conformance-tools conformance-images

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

# The 11 images the KUBE_VERSION [Conformance] specs run, under their upstream names (no KUBE_TEST_REPO_LIST),
# in one OCI layout tarball of several images (hack/mkimage -spec): layers shared between images, above all
# the Debian tool root under agnhost, nautilus, kitten, glibc-dns-testing and nginx, are stored once.
# Debian's parts come from 'apt-get download' into bin/.debs; the versions used are in
# $(CONF_DIR)/packages.txt. See docs/dev/conformance-images.md and scripts/build-conformance-images.sh.
CONFORMANCE_IMAGES := bin/test-images/conformance.tar
CONF_DIR := bin/.conformance
CONF_SH := scripts/build-conformance-images.sh
CONF_AGNHOST_VERSIONS := 2.66.1 2.55
SAMPLE_APISERVER_VERSION := v0.37.2
CONF_ETCD_VERSION := v3.7.3
CONF_BINS := $(foreach v,$(CONF_AGNHOST_VERSIONS),$(IMAGE_BIN)/agnhost-$(v)) $(IMAGE_BIN)/pause \
	$(IMAGE_BIN)/sample-apiserver $(IMAGE_BIN)/etcd $(IMAGE_BIN)/etcdctl $(CONF_DIR)/nonewprivs/usr/local/bin/nnp

conformance-images: $(CONFORMANCE_IMAGES)

# agnhost at each version the specs name (the version is main.Version, which 'agnhost --version' prints).
$(IMAGE_BIN)/agnhost-%: $(VERSIONS)/kubernetes-$(KUBE_VERSION) scripts/build-kube-main.sh
	./scripts/build-kube-main.sh $(KUBE_VERSION) k8s.io/kubernetes/test/images/agnhost $@ "-s -w -X main.Version=$*"
	@touch $@

# nonewprivs' nnp prints its effective uid; it is setuid root, which a tree keeps (mkimage's files are 0755).
$(IMAGE_BIN)/nnp: $(VERSIONS)/kubernetes-$(KUBE_VERSION) scripts/build-kube-main.sh
	./scripts/build-kube-main.sh $(KUBE_VERSION) k8s.io/kubernetes/test/images/nonewprivs $@ "-s -w"
	@touch $@

$(CONF_DIR)/nonewprivs/usr/local/bin/nnp: $(IMAGE_BIN)/nnp
	install -D -m 4755 $< $@

$(IMAGE_BIN)/sample-apiserver: $(VERSIONS)/sample-apiserver-$(SAMPLE_APISERVER_VERSION)
	GOBIN=$(CURDIR)/$(IMAGE_BIN) CGO_ENABLED=0 go install -ldflags "-s -w" k8s.io/sample-apiserver@$(SAMPLE_APISERVER_VERSION)
	@touch $@

$(IMAGE_BIN)/etcd $(IMAGE_BIN)/etcdctl &: $(VERSIONS)/etcd-image-$(CONF_ETCD_VERSION) scripts/build-etcd.sh
	./scripts/build-etcd.sh $(CONF_ETCD_VERSION) $(IMAGE_BIN)
	@touch $(IMAGE_BIN)/etcd $(IMAGE_BIN)/etcdctl

BUSYBOX_VERSION := 1.37.0
BUSYBOX_SHA256 := 3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
$(IMAGE_BIN)/busybox: $(VERSIONS)/busybox-$(BUSYBOX_VERSION) scripts/build-busybox.sh
	./scripts/build-busybox.sh $(BUSYBOX_VERSION) $(BUSYBOX_SHA256) $@

# The file trees (Debian roots, agnhost's files, nautilus' and kitten's html) and the spec naming them.
$(CONF_DIR)/roots.done: $(VERSIONS)/kubernetes-$(KUBE_VERSION) $(CONF_SH) $(IMAGE_BIN)/busybox
	BUSYBOX=$(IMAGE_BIN)/busybox ./$(CONF_SH) roots $(KUBE_VERSION) $(CONF_DIR)
	@touch $@

$(CONF_DIR)/spec.json: $(CONF_SH)
	@mkdir -p $(@D)
	./$(CONF_SH) spec $(CONF_DIR) $(IMAGE_BIN) >$@.tmp && mv $@.tmp $@

$(CONFORMANCE_IMAGES): $(MKIMAGE) $(CONF_DIR)/spec.json $(CONF_DIR)/roots.done $(CONF_BINS)
	@mkdir -p $(@D)
	$(MKIMAGE) -o $@ -spec $(CONF_DIR)/spec.json
	@ls -l $@

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
	HAKUBE_BIN=$(CURDIR)/$(BIN) HAKUBE_VERSITYGW=$(CURDIR)/$(VERSITYGW) ./scripts/gotest.sh -p 1 -count=1 -timeout 40m -v ./test/...
	HAKUBE_BIN=$(CURDIR)/$(BIN) ROBUSTNESS_DATASTORE=dqlite ./scripts/gotest.sh -count=1 -timeout 20m -v -run TestRobustness ./test/robustness/

# What a node (make run) and the tests (make test) need on a fresh machine: Debian packages, Go modules.
node-deps:
	./scripts/deps.sh node

test-deps:
	./scripts/deps.sh test

test: test-deps
	$(MAKE) lint unit e2e bench-quick conformance-quick

# Fault-injection runs on SERVERS servers of DATASTORE (etcd or dqlite): ITER iterations of every scenario
# (or of FAULTS, comma-separated), TRAFFIC seconds of traffic before and after each fault; ITER_FROM=n goes on
# with iterations n..ITER of a run that was cut short.
DATASTORE ?= etcd
SERVERS ?= 3
ITER ?= 20
TRAFFIC ?= 5
robustness: build
	HAKUBE_BIN=$(CURDIR)/$(BIN) ROBUSTNESS_ITER=$(ITER) ROBUSTNESS_ITER_FROM=$(ITER_FROM) ROBUSTNESS_TRAFFIC=$(TRAFFIC) ROBUSTNESS_FAULTS=$(FAULTS) ROBUSTNESS_SERVERS=$(SERVERS) ROBUSTNESS_DATASTORE=$(DATASTORE) \
		go test -count=1 -timeout 600m -v -run TestRobustness ./test/robustness/

# Benchmarks: hakube and its peers (Debian's etcd-server, kine on SQLite) side by side; figures are
# reported in bench/results/<date>-<host>.{json,md,png}, never asserted. BENCH_DURATION is the time per
# throughput row (default 3s), BENCH_REPS the repetitions per operation (default 10).
# bench-quick (under 3 min, part of 'make test') keeps the harness working; it writes to bench/results/quick/.
KINE := bin/kine
$(KINE): go.mod
	go build -o $(KINE) github.com/k3s-io/kine

BENCH_ENV = HAKUBE_BIN=$(CURDIR)/$(BIN) HAKUBE_KINE=$(CURDIR)/$(KINE) HAKUBE_BENCH=1 BENCH_COMMIT=$(VERSION)
bench: build $(KINE) $(TEST_IMAGES)
	$(BENCH_ENV) BENCH_DURATION=$(BENCH_DURATION) BENCH_REPS=$(BENCH_REPS) go test -count=1 -timeout 60m -v -run TestBench ./bench/

bench-quick: build $(KINE) $(TEST_IMAGES)
	$(BENCH_ENV) go test -count=1 -timeout 10m -v -run TestBench ./bench/ -args -quick

# The scale run: three servers per datastore (SCALE_DATASTORES, default etcd,dqlite), kwok playing the
# kubelets of SCALE_NODES nodes (500), SCALE_PODS pods (10000); bench/results/<date>-<host>-scale.{json,md}.
KWOK := bin/kwok
KWOK_VERSION := v0.8.0
$(KWOK):
	GOBIN=$(CURDIR)/bin go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

bench-scale: build $(KWOK)
	$(BENCH_ENV) HAKUBE_KWOK=$(CURDIR)/$(KWOK) HAKUBE_BENCH_SCALE=1 go test -count=1 -timeout 120m -v -run TestScale ./bench/

fuzz:
	go test ./internal/token -run '^$$' -fuzz FuzzParse -fuzztime 60s

# --- Conformance: Kubernetes' own e2e.test, ginkgo and kubectl at KUBE_VERSION, run by test/conformance
# against three servers that are nodes and an agent, on network-namespace hosts. DATASTORE=etcd|dqlite,
# FAULT=sigkill-leader (SIGKILL the datastore leader's server every FAULT_EVERY, default 5m, and restart
# it), FOCUS/SKIP (ginkgo regexps, for debugging), FOCUS_FILE (spec names, one per line: a run's
# failed.txt runs its failures again), PARALLEL (ginkgo processes, default 4). A full run writes
# conformance/results/<date>-<datastore>[-<fault>]/ and its section of docs/conformance.md; a run with
# FOCUS, SKIP or FOCUS_FILE writes conformance/results/debug/ only.
CONFORMANCE_BIN := bin/conformance
E2E_TEST := $(CONFORMANCE_BIN)/e2e.test
GINKGO := $(CONFORMANCE_BIN)/ginkgo
KUBECTL := $(CONFORMANCE_BIN)/kubectl
CONFORMANCE_TOOLS := $(E2E_TEST) $(GINKGO) $(KUBECTL)
PARALLEL ?= 4
FAULT_EVERY ?= 5m

# Both are built in a copy of hakube's module, from bin/hakube's build cache (-hakube: 4 min instead of
# 15). The ginkgo CLI must be the version e2e.test links: it is built in the same throwaway module.
# e2e.test needs its own version: specs derive the Pod Security level's version from it (v0.0 fails).
$(E2E_TEST) $(GINKGO) &: $(VERSIONS)/kubernetes-$(KUBE_VERSION) scripts/build-kube-main.sh go.mod
	ALSO=github.com/onsi/ginkgo/v2/ginkgo=$(GINKGO) ./scripts/build-kube-main.sh -test -hakube $(KUBE_VERSION) k8s.io/kubernetes/test/e2e $(E2E_TEST) \
		"-s -w $(call kube_version_x,$(KUBE_VERSION))"
	@touch $(E2E_TEST) $(GINKGO)

# The kubectl specs exec kubectl; the machine's may be far from KUBE_VERSION (kubectl supports one minor
# version of skew).
$(KUBECTL): $(VERSIONS)/kubernetes-$(KUBE_VERSION) scripts/build-kube-main.sh go.mod
	./scripts/build-kube-main.sh -hakube $(KUBE_VERSION) k8s.io/kubernetes/cmd/kubectl $@ "-s -w $(call kube_version_x,$(KUBE_VERSION))"
	@touch $@

conformance-tools: $(CONFORMANCE_TOOLS)

CONFORMANCE_ENV = HAKUBE_BIN=$(CURDIR)/$(BIN) CONFORMANCE_E2E=$(CURDIR)/$(E2E_TEST) CONFORMANCE_GINKGO=$(CURDIR)/$(GINKGO) \
	CONFORMANCE_KUBECTL=$(CURDIR)/$(KUBECTL) CONFORMANCE_IMAGES="$(abspath $(CONFORMANCE_IMAGES))" \
	DATASTORE=$(DATASTORE) PARALLEL=$(PARALLEL)
CONFORMANCE_RUN := $(shell date -u +%Y-%m-%d)-$(DATASTORE)$(if $(FAULT),-$(FAULT))
conformance: build conformance-images $(CONFORMANCE_TOOLS)
	$(CONFORMANCE_ENV) FAULT=$(FAULT) FAULT_EVERY=$(FAULT_EVERY) FOCUS='$(FOCUS)' SKIP='$(SKIP)' FOCUS_FILE=$(abspath $(FOCUS_FILE)) \
		$(if $(FOCUS)$(SKIP)$(FOCUS_FILE),CONFORMANCE_RESULTS=$(CURDIR)/conformance/results/debug,CONFORMANCE_RESULTS=$(CURDIR)/conformance/results/$(CONFORMANCE_RUN) CONFORMANCE_SUMMARY=$(CURDIR)/docs/conformance.md) \
		go test -count=1 -timeout 600m -v -run TestConformance ./test/conformance/

# mkimage's tests (every image checked in a chroot), then a dozen [Conformance] specs across sig-network,
# sig-node, sig-apps and sig-api-machinery on the same topology (part of 'make test'); results in
# conformance/results/quick/.
conformance-quick: build conformance-images $(CONFORMANCE_TOOLS)
	go test -count=1 ./hack/mkimage
	$(CONFORMANCE_ENV) FOCUS_FILE=$(CURDIR)/test/conformance/quick.txt CONFORMANCE_RESULTS=$(CURDIR)/conformance/results/quick \
		go test -count=1 -timeout 20m -v -run TestConformance ./test/conformance/

clean:
	rm -rf bin
