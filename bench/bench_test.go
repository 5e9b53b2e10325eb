// Package bench measures hakube side by side with the systems users would pick
// instead, on this machine in one run; 'make bench' runs it and writes
// bench/results/<date>-<host>.{json,md} and PNG plots. Figures are reported,
// never asserted.
package bench

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hakube/hakube/test/harness"
)

var quick = flag.Bool("quick", false, "a run of under 3 minutes that keeps the harness working; its figures are rough")

// plan is how much of each measurement a run makes.
type plan struct {
	dur     time.Duration // per throughput row
	reps    int           // per operation
	settle  time.Duration // before the idle footprint is sampled, and its window
	pool    int           // ConfigMaps the get, list and update workloads use
	history int           // revisions written, then compacted at once
	profile time.Duration // CPU profile of the leader during put at 16 clients
	out     string        // results directory
}

func newPlan() plan {
	if *quick {
		return withOut(plan{dur: 300 * time.Millisecond, reps: 1, settle: 500 * time.Millisecond, pool: 50, history: 2000, profile: time.Second, out: "results/quick"})
	}
	p := plan{dur: 3 * time.Second, reps: 10, settle: 5 * time.Second, pool: 500, history: 100000, profile: 2 * time.Second, out: "results"}
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil && d > 0 {
		p.dur = d
		p.profile = max(d-time.Second, time.Second)
	}
	p.reps, p.history = harness.EnvInt("BENCH_REPS", p.reps), harness.EnvInt("BENCH_HISTORY", p.history)
	return withOut(p)
}

// withOut takes BENCH_OUT, where a trial run that must not replace the
// stored report writes.
func withOut(p plan) plan {
	if o := os.Getenv("BENCH_OUT"); o != "" {
		p.out = o
	}
	return p
}

// Report is one run of the benchmarks.
type Report struct {
	Date      string      `json:"date"`
	Host      string      `json:"host"`
	Commit    string      `json:"commit"`
	Quick     bool        `json:"quick"`
	CPUs      int         `json:"cpus"`
	Fsync     Latency     `json:"fsync"`
	Results   []Result    `json:"results"`
	Ops       []Op        `json:"operations"`
	Footprint []Footprint `json:"footprint"`
	Profiles  []Profile   `json:"profiles"`
	Seconds   float64     `json:"seconds"`
}

// Latency is a median and a 99th percentile in milliseconds.
type Latency struct {
	P50ms float64 `json:"p50ms"`
	P99ms float64 `json:"p99ms"`
}

// Result is one workload against one target.
type Result struct {
	Target    string  `json:"target"`
	Level     string  `json:"level"` // datastore or kubernetes
	Workload  string  `json:"workload"`
	Clients   int     `json:"clients"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"opsPerSec"`
	Latency
	// CDFms[i] is the i-th percentile latency, i = 0..100, for the plots.
	CDFms []float64 `json:"cdfMs"`
}

// Op is an operation repeated against one target; samples are in seconds.
type Op struct {
	Target    string    `json:"target"`
	Operation string    `json:"operation"`
	Samples   []float64 `json:"samples"`
	Median    float64   `json:"median"`
	Max       float64   `json:"max"`
}

// Footprint is the memory and CPU of a target's processes in one phase.
type Footprint struct {
	Target    string  `json:"target"`
	Processes string  `json:"processes"`
	Phase     string  `json:"phase"` // idle, put×16, create×16
	RSSMiB    float64 `json:"rssMiB"`
	SetMiB    float64 `json:"setMiB"` // resident pages of the processes, each once
	AnonMiB   float64 `json:"anonMiB"`
	CPUPct    float64 `json:"cpuPercent"` // of one core
}

// Profile is where a leader's CPU went during a workload.
type Profile struct {
	Target   string `json:"target"`
	Workload string `json:"workload"`
	File     string `json:"file"`
	Top      string `json:"top"`
}

// TestBench runs every target, one after the other (HAKUBE_BENCH=1; 'make bench').
func TestBench(t *testing.T) {
	if os.Getenv("HAKUBE_BENCH") == "" {
		t.Skip("benchmarks run with 'make bench'")
	}
	began := time.Now()
	p := newPlan()
	host, _ := os.Hostname()
	rep := &Report{Date: began.UTC().Format(time.RFC3339), Host: host, Commit: os.Getenv("BENCH_COMMIT"), Quick: *quick, CPUs: runtime.NumCPU()}
	rep.Fsync = fsync(t)
	t.Logf("fsync p50 %.2f ms, p99 %.2f ms", rep.Fsync.P50ms, rep.Fsync.P99ms)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { k.run(t, p, rep) })
	}
	rep.Seconds = time.Since(began).Seconds()
	write(t, p, rep)
}

// TestReport writes the Markdown and plots of a stored run again
// (BENCH_REPORT=results/<date>-<host>.json), e.g. after the report's code changed.
func TestReport(t *testing.T) {
	file := os.Getenv("BENCH_REPORT")
	if file == "" {
		t.Skip("set BENCH_REPORT to a run's JSON file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{}
	if err := json.Unmarshal(b, rep); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p := newPlan()
	p.out = filepath.Dir(file)
	write(t, p, rep)
}

// kind is one system under test, and how it is measured.
type kind struct {
	name string
	run  func(*testing.T, plan, *Report)
}

var kinds = []kind{
	datastoreKind("hakube-etcd", startHA("etcd"), haOpsOn("etcd")),
	datastoreKind("hakube-dqlite", startHA("dqlite"), haOpsOn("dqlite")),
	datastoreKind("hakube-sqlite", startHakubeSQLite, sqliteOps),
	datastoreKind("etcd", startPeerEtcd, peerEtcdOps),
	datastoreKind("kine", startKine, kineOps),
	{"hakube-nodes", nodesBench},
}

// datastoreKind is a target measured by the common datastore and Kubernetes
// workloads, then by its own operations.
func datastoreKind(name string, start func(*testing.T, plan) *target, ops func(*testing.T, plan, *target, *Report)) kind {
	return kind{name, func(t *testing.T, p plan, rep *Report) {
		began := time.Now()
		tg := start(t, p)
		t.Logf("%s: started in %.1f s", tg.name, time.Since(began).Seconds())
		measure(t, p, tg, rep)
		t.Logf("%s: measured by %.1f s", tg.name, time.Since(began).Seconds())
		ops(t, p, tg, rep)
		t.Logf("%s: operations timed by %.1f s", tg.name, time.Since(began).Seconds())
	}}
}

func startHA(datastore string) func(*testing.T, plan) *target {
	return func(t *testing.T, p plan) *target { return startHakubeHA(t, p, datastore) }
}

func haOpsOn(datastore string) func(*testing.T, plan, *target, *Report) {
	return func(t *testing.T, p plan, tg *target, rep *Report) { haOps(t, p, tg, rep, datastore) }
}

// Target names, as the report shows them.
const (
	hakubeEtcd   = "hakube 3-server etcd"
	hakubeDqlite = "hakube 3-server Dqlite"
	hakubeSQLite = "hakube 1-server SQLite"
	peerEtcd     = "etcd 3.4 3-member (Debian)"
	peerKine     = "kine on SQLite"
)

// pairs are the hakube targets and the peer each is compared with.
var pairs = [][2]string{
	{hakubeEtcd, peerEtcd},
	{hakubeDqlite, peerEtcd},
	{hakubeSQLite, peerKine},
}
