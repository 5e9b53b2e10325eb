package robustness

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/test/harness"
	lin "github.com/hakube/hakube/test/linearizability"
)

// Row is one run of the summary table. HealSecs is how long undoing the fault
// took (for a killed server: its restart until ready); RecoverySecs is the time
// after that until every server's API accepted a write.
type Row struct {
	Scenario     string  `json:"scenario"`
	Datastore    string  `json:"datastore"`
	Servers      int     `json:"servers"`
	Iteration    int     `json:"iteration"`
	KVOps        int     `json:"kvOps"`
	KVFailed     int     `json:"kvFailed"`
	K8sOps       int     `json:"k8sOps"`
	K8sFailed    int     `json:"k8sFailed"`
	WatchEvents  int     `json:"watchEvents"`
	Relists      int     `json:"watchRelists"`
	Violations   int     `json:"violations"`
	SelfRestarts int     `json:"selfRestarts"`
	HealSecs     float64 `json:"healSeconds"`
	RecoverySecs float64 `json:"recoverySeconds"`
	Result       string  `json:"result"`
}

func artifactsDir() string { return filepath.Join("..", "artifacts", "robustness") }

func writeSummary(t *testing.T, rows []Row) {
	dir := artifactsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	b, _ := json.MarshalIndent(rows, "", "  ")
	_ = os.WriteFile(filepath.Join(dir, "summary.json"), b, 0o644)
	var md strings.Builder
	md.WriteString("| scenario | datastore | servers | iter | kv ops (failed) | k8s ops (failed) | watch events (relists) | violations | self-restarts | heal s | recovery s | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %s | %d | %d | %d (%d) | %d (%d) | %d (%d) | %d | %d | %.1f | %.1f | %s |\n", r.Scenario, r.Datastore, r.Servers, r.Iteration,
			r.KVOps, r.KVFailed, r.K8sOps, r.K8sFailed, r.WatchEvents, r.Relists, r.Violations, r.SelfRestarts, r.HealSecs, r.RecoverySecs, r.Result)
	}
	_ = os.WriteFile(filepath.Join(dir, "summary.md"), []byte(md.String()), 0o644)
}

// TestRobustness runs on embedded etcd, or on Dqlite with
// ROBUSTNESS_DATASTORE=dqlite ('make robustness DATASTORE=dqlite').
func TestRobustness(t *testing.T) {
	// Knobs for long runs: 'make robustness ITER=20 TRAFFIC=10 [ITER_FROM=n]'.
	iterations := harness.EnvInt("ROBUSTNESS_ITER", 1)
	// A long run cut short goes on from where it stopped: iterations
	// ROBUSTNESS_ITER_FROM..ROBUSTNESS_ITER, on a new cluster.
	from := harness.EnvInt("ROBUSTNESS_ITER_FROM", 1)
	traffic := time.Duration(harness.EnvInt("ROBUSTNESS_TRAFFIC", 3)) * time.Second
	servers := harness.EnvInt("ROBUSTNESS_SERVERS", 3)
	kind, peerPort, peerCert := os.Getenv("ROBUSTNESS_DATASTORE"), etcd.DefaultPeerPort, etcd.PeerCert
	switch kind {
	case "":
		kind = "etcd"
	case "etcd":
	case "dqlite":
		peerPort, peerCert = dqlite.DefaultPeerPort, dqlite.PeerCert
	default:
		t.Fatalf("ROBUSTNESS_DATASTORE=%q: use etcd or dqlite", kind)
	}
	nw := harness.NewNetwork(t, servers)
	proxy := installPeerProxy(t, nw, peerPort, peerCert)
	c := harness.NewEtcdCluster(t, nw, servers, "robustness-secret")
	c.InitArgs = []string{"--datastore=" + kind}
	// Extra server flags for every server, space-separated (a bisect of a
	// setting: ROBUSTNESS_SERVER_ARGS='--etcd-arg heartbeat-interval=300').
	for _, s := range c.Servers {
		s.Args = append(s.Args, strings.Fields(os.Getenv("ROBUSTNESS_SERVER_ARGS"))...)
	}
	c.Form(t)
	faults := selectedFaults(t, proxy, servers)
	var rows []Row
runs:
	for iter := from; iter <= iterations; iter++ {
		for _, f := range faults {
			var row Row
			ok := t.Run(fmt.Sprintf("%s/%d", f.Name, iter), func(t *testing.T) {
				row = runScenario(t, c, kind, f, iter, traffic)
			})
			rows = append(rows, row)
			// Rewritten after every run, so an interrupted long run keeps its table.
			writeSummary(t, rows)
			if !ok {
				keepDataDirs(t, c, fmt.Sprintf("%s-%d", f.Name, iter))
				break runs
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(artifactsDir(), "summary.md"))
	t.Logf("summary:\n%s", b)
}

// selectedFaults is every fault that makes sense on n servers, or those named
// in ROBUSTNESS_FAULTS (comma-separated).
func selectedFaults(t *testing.T, p *peerProxy, n int) []Fault {
	all := Faults(p)
	want := os.Getenv("ROBUSTNESS_FAULTS")
	var out []Fault
	if want == "" {
		for _, f := range all {
			if f.MinServers <= n {
				out = append(out, f)
			}
		}
		return out
	}
	for _, name := range strings.Split(want, ",") {
		// A run's label is the fault and the iteration: twice in one list, the
		// second run would find the first one's objects and keys.
		if slices.ContainsFunc(out, func(f Fault) bool { return f.Name == name }) {
			t.Fatalf("ROBUSTNESS_FAULTS: %s is named twice; use ROBUSTNESS_ITER to repeat it", name)
		}
		i := slices.IndexFunc(all, func(f Fault) bool { return f.Name == name })
		if i < 0 {
			t.Fatalf("ROBUSTNESS_FAULTS: no fault called %q", name)
		}
		if all[i].MinServers > n {
			t.Fatalf("ROBUSTNESS_FAULTS: %s needs at least %d servers", name, all[i].MinServers)
		}
		out = append(out, all[i])
	}
	return out
}

func runScenario(t *testing.T, c *harness.Cluster, kind string, f Fault, iter int, traffic time.Duration) (row Row) {
	row = Row{Scenario: f.Name, Datastore: kind, Servers: len(c.Servers), Iteration: iter, Result: "fail"}
	label := fmt.Sprintf("%s-%d", f.Name, iter)
	restartsBefore := selfRestarts(c)
	defer func() { row.SelfRestarts = selfRestarts(c) - restartsBefore }()
	hist := lin.NewHistory()
	// Writers stop first; watchers run until they have seen the final state.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchCtx, stopWatchers := context.WithCancel(context.Background())
	defer stopWatchers()
	var wg, watchWG sync.WaitGroup

	// One register client per member: on etcd through its client port, on
	// Dqlite through the socket its apiserver uses (a file in the data dir, so
	// the client stays up while the member's network is cut off).
	var kvs []*kvClient
	for i, s := range c.Servers {
		var cli *clientv3.Client
		if kind == "dqlite" {
			cli = harness.SocketEtcdClient(t, s.DqliteSocket())
		} else {
			cli = c.EtcdClient(t, s)
			defer cli.Close()
		}
		kv := &kvClient{id: i, cli: cli, hist: hist, kine: kind == "dqlite"}
		for k := range 4 {
			kv.keys = append(kv.keys, fmt.Sprintf("/robustness/%s/k%d", label, k))
		}
		kvs = append(kvs, kv)
	}
	list := func() (map[string]string, string) {
		t.Helper()
		var l *corev1.ConfigMapList
		anyServer(t, c, "listing", func(ctx context.Context, cs kubernetes.Interface) (err error) {
			l, err = cs.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{LabelSelector: "robustness=" + label})
			return err
		})
		out := map[string]string{}
		for _, cm := range l.Items {
			out[cm.Name] = cm.Data["v"]
		}
		return out, l.ResourceVersion
	}
	_, startRV := list()
	writers := &k8sWriters{label: label, objects: map[string]*object{}}
	var watchers []*watcher
	for i, s := range c.Servers {
		cs := s.Client()
		wt := &watcher{label: label}
		watchers = append(watchers, wt)
		wg.Add(2)
		watchWG.Add(1)
		go func() { defer wg.Done(); kvs[i].run(ctx) }()
		go func() { defer wg.Done(); writers.run(ctx, i, cs) }()
		go func() { defer watchWG.Done(); wt.run(watchCtx, cs, startRV) }()
	}

	time.Sleep(traffic)
	victim := pickVictim(t, c, f.Leader)
	t.Logf("%s: victim %s", f.Name, victim.Name)
	f.Inject(t, c, victim)
	time.Sleep(faultDuration)
	healBegan := time.Now()
	f.Heal(t, c, victim)
	healed := time.Now()
	row.HealSecs = healed.Sub(healBegan).Seconds()
	recovery, err := waitRecovered(c, 3*time.Minute)
	if err != nil {
		t.Fatalf("cluster did not recover: %v", err)
	}
	row.RecoverySecs = recovery.Seconds()
	t.Logf("FIGURE %s recovery=%.2fs (heal at +%.1fs)", f.Name, recovery.Seconds(), (hist.Since() - time.Since(healed)).Seconds())
	time.Sleep(traffic)
	cancel()
	wg.Wait()

	var violations []string
	for _, kv := range kvs {
		row.KVOps += kv.ok + kv.failed
		row.KVFailed += kv.failed
	}
	row.K8sOps, row.K8sFailed = writers.ok+writers.failed, writers.failed
	if err := hist.Check(filepath.Join(artifactsDir(), label)); err != nil {
		violations = append(violations, "etcd-API: "+err.Error())
	}
	// A last write after the traffic: once a watcher has seen it, it has seen
	// everything before it (other writes move the revision without events).
	barrier := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: label + "-barrier", Labels: map[string]string{"robustness": label}}}
	var created *corev1.ConfigMap
	anyServer(t, c, "writing the barrier", func(ctx context.Context, cs kubernetes.Interface) (err error) {
		created, err = cs.CoreV1().ConfigMaps(namespace).Create(ctx, barrier, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) { // an earlier attempt applied
			created, err = cs.CoreV1().ConfigMaps(namespace).Get(ctx, barrier.Name, metav1.GetOptions{})
		}
		return err
	})
	final, _ := list()
	barrierRV, _ := strconv.ParseInt(created.ResourceVersion, 10, 64)
	// A server that restarted itself needs time to serve its watch again.
	for i, wt := range watchers {
		deadline := time.Now().Add(90 * time.Second)
		for !wt.caughtUp(barrierRV) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !wt.caughtUp(barrierRV) {
			violations = append(violations, fmt.Sprintf("watcher on %s did not see the barrier write within 90s", c.Servers[i].Name))
		}
	}
	stopWatchers()
	watchWG.Wait()
	written := maps.Clone(final)
	delete(written, barrier.Name)
	violations = append(violations, writers.checkFinal(written)...)
	for i, wt := range watchers {
		// What each watcher saw must add up to the final state.
		for _, g := range wt.gaps(final) {
			violations = append(violations, fmt.Sprintf("watcher on %s: %s", c.Servers[i].Name, g))
		}
		row.WatchEvents += wt.events
		row.Relists += wt.relists
	}
	if kind == "etcd" {
		c.CheckHashesEqual(t)
	} else {
		c.CheckSameConfigMaps(t, namespace)
	}
	row.Violations = len(violations)
	t.Logf("%s: %d kv ops (%d failed), %d k8s ops (%d failed), %d objects, %d watch events, recovery %.1fs",
		f.Name, row.KVOps, row.KVFailed, row.K8sOps, row.K8sFailed, len(final), row.WatchEvents, row.RecoverySecs)
	if len(violations) > 0 {
		t.Errorf("%d violations:\n%s", len(violations), strings.Join(violations, "\n"))
		return row
	}
	row.Result = "pass"
	return row
}

// anyServer runs fn against each server in turn until one succeeds: a server
// may be restarting itself. It gives up after two minutes.
func anyServer(t *testing.T, c *harness.Cluster, what string, fn func(context.Context, kubernetes.Interface) error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := fn(ctx, c.Servers[i%len(c.Servers)].Client())
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// selfRestarts counts, per server, the in-place restarts hakube logged.
func selfRestarts(c *harness.Cluster) int {
	n := 0
	for _, s := range c.Servers {
		n += strings.Count(s.FullLog(), harness.RestartInPlaceLine)
	}
	return n
}

// waitRecovered waits until every server's API accepts a write; it returns how
// long that took.
func waitRecovered(c *harness.Cluster, limit time.Duration) (time.Duration, error) {
	began := time.Now()
	for i, s := range c.Servers {
		cs := s.Client()
		for n := 0; ; n++ {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: fmt.Sprintf("probe-s%d-", i+1)}}
			_, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{})
			cancel()
			if err == nil {
				break
			}
			if time.Since(began) > limit {
				return 0, fmt.Errorf("%s accepts no write: %v", s.Name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return time.Since(began), nil
}

// keepDataDirs copies the servers' data dirs and logs next to the summary.
func keepDataDirs(t *testing.T, c *harness.Cluster, label string) {
	dir := filepath.Join(artifactsDir(), label)
	_ = os.MkdirAll(dir, 0o755)
	for _, s := range c.Servers {
		_ = exec.Command("cp", "-a", filepath.Dir(s.DataDir), filepath.Join(dir, s.Name)).Run()
	}
	t.Logf("data dirs and logs kept in %s", dir)
}
