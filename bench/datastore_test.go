// Package bench measures hakube on this machine; 'make bench' runs it and
// writes bench/results/<date>-<host>.{json,md}. Figures are reported, never
// asserted.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hakube/hakube/test/harness"
)

// Result is one workload against one target.
type Result struct {
	Target    string  `json:"target"`
	Workload  string  `json:"workload"`
	Clients   int     `json:"clients"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"opsPerSec"`
	P50ms     float64 `json:"p50ms"`
	P99ms     float64 `json:"p99ms"`
}

// Report is one run of the benchmarks.
type Report struct {
	Date    string   `json:"date"`
	Host    string   `json:"host"`
	Commit  string   `json:"commit"`
	FsyncMs float64  `json:"fsyncP50ms"`
	Results []Result `json:"results"`
}

func seconds() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil {
		return d
	}
	return 10 * time.Second
}

// TestBench runs the datastore-level benchmarks (HAKUBE_BENCH=1; 'make bench').
func TestBench(t *testing.T) {
	if os.Getenv("HAKUBE_BENCH") == "" {
		t.Skip("benchmarks run with 'make bench'")
	}
	host, _ := os.Hostname()
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Host: host, Commit: os.Getenv("BENCH_COMMIT")}
	rep.FsyncMs = fsyncP50(t)
	t.Logf("fsync p50 %.2f ms", rep.FsyncMs)
	for _, kind := range []string{"etcd", "dqlite", "sqlite"} {
		t.Run(kind, func(t *testing.T) {
			target, cli, server := start(t, kind)
			defer cli.Close()
			for _, w := range append(workloads(kind, cli), kubeWorkloads(t, server)...) {
				r := run(t, w, seconds())
				r.Target = target
				t.Logf("%-22s %-16s %3d clients: %8.0f ops/s  p50 %6.2f ms  p99 %7.2f ms  errors %d", target, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors)
				rep.Results = append(rep.Results, r)
			}
		})
	}
	write(t, rep)
}

// start runs hakube on the datastore kind (etcd and Dqlite: three servers on
// network-namespace hosts; SQLite: one server) and returns a client of the
// datastore's etcd API (the leader's member, or the single server's kine)
// and the server whose apiserver the Kubernetes workloads use.
func start(t *testing.T, kind string) (string, *clientv3.Client, *harness.Server) {
	unix := func(sock string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		return cli
	}
	if kind == "sqlite" {
		s := harness.NewServer(t, "bench")
		s.Start()
		return "hakube 1-server SQLite", unix(filepath.Join(s.DataDir, "server", "kine.sock")), s
	}
	nw := harness.NewNetwork(t, 3)
	c := harness.NewEtcdCluster(t, nw, 3, "bench-secret")
	c.InitArgs = []string{"--datastore=" + kind}
	c.Form(t)
	leader := c.Leader(t, c.Servers[0])
	if kind == "etcd" {
		return "hakube 3-server etcd", c.EtcdClient(t, leader), leader
	}
	return "hakube 3-server Dqlite", unix(filepath.Join(leader.DataDir, "server", "dqlite.sock")), leader
}

// workload is an operation run by clients concurrently; i numbers the
// operations so that each client touches its own keys.
type workload struct {
	name    string
	clients int
	op      func(ctx context.Context, i int) error
}

const keySpace = 10000

// workloads are the operations measured on a datastore kind; kine's etcd
// API, which the SQLite and Dqlite datastores serve, refuses serializable reads.
func workloads(kind string, cli *clientv3.Client) []workload {
	value := make([]byte, 256)
	_, _ = rand.Read(value)
	put := func(ctx context.Context, i int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("/bench/%05d", i%keySpace), string(value))
		return err
	}
	get := func(opts ...clientv3.OpOption) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error {
			_, err := cli.Get(ctx, fmt.Sprintf("/bench/%05d", i%keySpace), opts...)
			return err
		}
	}
	ws := []workload{
		{"put", 1, put}, {"put", 16, put}, {"put", 64, put},
		{"get-linearizable", 16, get()},
	}
	if kind == "etcd" {
		ws = append(ws, workload{"get-serializable", 16, get(clientv3.WithSerializable())})
	}
	return ws
}

// run drives w for d and measures every operation's latency.
func run(t *testing.T, w workload, d time.Duration) Result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	began := time.Now()
	for c := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for i := c; ctx.Err() == nil; i += w.clients {
				start := time.Now()
				octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := w.op(octx, i*7919)
				ocancel()
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat, errs = append(lat, mine...), errs+bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	slices.Sort(lat)
	r := Result{Workload: w.name, Clients: w.clients, Ops: len(lat), Errors: errs, OpsPerSec: float64(len(lat)) / elapsed.Seconds()}
	if len(lat) > 0 {
		r.P50ms = ms(lat[len(lat)/2])
		r.P99ms = ms(lat[len(lat)*99/100])
	}
	if len(lat) == 0 {
		t.Errorf("%s at %d clients: no operation succeeded (%d errors)", w.name, w.clients, errs)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fsyncP50 is the median latency of a 4 KiB write plus fdatasync in the
// directory the servers' data lives in: the floor of a durable write.
func fsyncP50(t *testing.T) float64 {
	f, err := os.CreateTemp(os.TempDir(), "fsync-*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var lat []time.Duration
	for i := range 500 {
		start := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return ms(lat[len(lat)/2])
}

// write stores the report as JSON and as a Markdown table.
func write(t *testing.T, rep *Report) {
	dir := "results"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, time.Now().UTC().Format("2006-01-02")+"-"+rep.Host)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(base+".json", b, 0o644); err != nil {
		t.Fatal(err)
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmarks, %s on %s (commit %s)\n\n## Datastore\n\n", rep.Date, rep.Host, rep.Commit)
	fmt.Fprintf(&md, "Through the etcd API (clientv3) to the leader's member; 256-byte values over %d keys; "+
		"%s per row. fsync p50 of this disk: %.2f ms. Serializable reads only on etcd: kine's etcd API, which the "+
		"SQLite and Dqlite datastores serve, refuses them.\n\n", keySpace, seconds(), rep.FsyncMs)
	fmt.Fprintln(&md, "| target | workload | clients | ops/s | p50 ms | p99 ms | errors |")
	fmt.Fprintln(&md, "|---|---|---|---|---|---|---|")
	for _, r := range rep.Results {
		if !strings.HasPrefix(r.Workload, "k8s-") {
			fmt.Fprintf(&md, "| %s | %s | %d | %.0f | %.2f | %.2f | %d |\n", r.Target, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors)
		}
	}
	fmt.Fprintf(&md, "\n## Kubernetes API\n\nConfigMaps with 1 KiB of data through the server's apiserver with client-go "+
		"(update is a merge patch; list reads 100 of the %d+ objects). SLO: mutating calls p99 ≤ %d ms.\n\n", kubePool, sloP99ms)
	fmt.Fprintln(&md, "| target | workload | workers | ops/s | p50 ms | p99 ms | errors | SLO |")
	fmt.Fprintln(&md, "|---|---|---|---|---|---|---|---|")
	for _, r := range rep.Results {
		if !strings.HasPrefix(r.Workload, "k8s-") {
			continue
		}
		slo := ""
		if mutating(r.Workload) {
			slo = "met"
			if r.P99ms > sloP99ms {
				slo = "**missed**"
			}
		}
		fmt.Fprintf(&md, "| %s | %s | %d | %.0f | %.2f | %.2f | %d | %s |\n", r.Target, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors, slo)
	}
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s.md\n%s", base, md.String())
}
