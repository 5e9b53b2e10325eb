# hakube build, run and test entry points.
KUBE_VERSION := v1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/hakube/hakube/internal/version.Version=$(VERSION) \
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

.PHONY: build run test test-deps unit e2e robustness bench bench-quick lint fuzz clean

build:
	go build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/hakube

# A single server on the embedded SQLite datastore.
run: build
	$(BIN) server --data-dir $(DATA_DIR)

lint:
	@test -z "$$(gofmt -l cmd internal test bench)" || (gofmt -l cmd internal test bench; exit 1)
	go vet ./...

unit:
	go test ./internal/...

$(VERSITYGW):
	GOBIN=$(CURDIR)/bin go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

# Integration and multi-host tests use the binary built once by 'build'.
# The robustness short matrix runs on etcd with the rest, then once more on Dqlite.
e2e: build $(VERSITYGW)
	HAKUBE_BIN=$(CURDIR)/$(BIN) HAKUBE_VERSITYGW=$(CURDIR)/$(VERSITYGW) go test -p 1 -count=1 -timeout 40m -v ./test/...
	HAKUBE_BIN=$(CURDIR)/$(BIN) ROBUSTNESS_DATASTORE=dqlite go test -count=1 -timeout 20m -v -run TestRobustness ./test/robustness/

# What the tests need on a fresh machine (Debian packages, Go modules).
test-deps:
	./scripts/test-deps.sh

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
