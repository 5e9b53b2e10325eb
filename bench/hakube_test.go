package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// datastoreClient reaches s's member of the cluster's datastore from s's host.
func datastoreClient(t *testing.T, c *harness.Cluster, s *harness.Server, kind string) *clientv3.Client {
	if kind == "dqlite" {
		return harness.SocketEtcdClient(t, s.DqliteSocket())
	}
	cli := c.EtcdClient(t, s)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// startHakubeHA forms three servers on the datastore kind (etcd or dqlite),
// with a fourth host for the cold starts.
func startHakubeHA(t *testing.T, p plan, kind string) *target {
	nw := harness.NewNetwork(t, 4)
	c := harness.NewEtcdCluster(t, nw, 3, "bench-secret")
	for _, s := range c.Servers {
		s.Args = append(s.Args, "--enable-pprof")
	}
	// Server 1's start is the first cold start sample.
	began := time.Now()
	c.Servers[0].Start("--cluster-init", "--datastore="+kind)
	cold := time.Since(began).Seconds()
	// The joins of a new cluster catch up from the log; the joins timed in
	// haOps, after the workloads, from a snapshot.
	var joins []float64
	for _, s := range c.Servers[1:] {
		began := time.Now()
		if err := s.StartAsync("--server", c.Servers[0].URL()); err != nil {
			t.Fatal(err)
		}
		waitVoter(t, c, c.Servers[0], s)
		joins = append(joins, time.Since(began).Seconds())
		if err := s.WaitReady(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitVoters(t, c.Servers[0], len(c.Servers))
	leader := c.Leader(t, c.Servers[0])
	tg := &target{name: hakubeEtcd, serializable: kind == "etcd", compacts: true, kube: leader, cluster: c, cold: []float64{cold}, logJoins: joins,
		procs: "3 servers (control plane and datastore)"}
	if kind == "dqlite" {
		tg.name = hakubeDqlite
	}
	tg.writer = datastoreClient(t, c, leader, kind)
	tg.watcher = datastoreClient(t, c, follower(c, leader), kind)
	tg.pids = func() []int { return serverPids(c.Servers) }
	tg.profile = func(ctx context.Context, d time.Duration) ([]byte, error) {
		return pprofCPU(ctx, c.HostOf(leader), d)
	}
	return tg
}

func follower(c *harness.Cluster, leader *harness.Server) *harness.Server {
	for _, s := range c.Servers {
		if s != leader {
			return s
		}
	}
	return nil
}

func serverPids(ss []*harness.Server) []int {
	var pids []int
	for _, s := range ss {
		if s.Running() {
			pids = append(pids, s.Pid())
		}
	}
	return pids
}

// pprofCPU takes a CPU profile of the server on h (--enable-pprof).
func pprofCPU(ctx context.Context, h *harness.Host, d time.Duration) ([]byte, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: h.DialContext}}
	url := fmt.Sprintf("http://127.0.0.1:2381/debug/pprof/profile?seconds=%d", int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func startHakubeSQLite(t *testing.T, _ plan) *target {
	s := harness.NewServer(t, "bench")
	began := time.Now()
	s.Start()
	cold := time.Since(began).Seconds()
	cli := harness.SocketEtcdClient(t, filepath.Join(s.DataDir, "server", "kine.sock"))
	return &target{name: hakubeSQLite, writer: cli, watcher: cli, kube: s, cold: []float64{cold}, procs: "1 server (control plane and datastore)",
		pids: func() []int { return serverPids([]*harness.Server{s}) }}
}

// timeStart starts s with a fresh data dir and returns the seconds until it
// reports ready; it is stopped again.
func timeStart(t *testing.T, s *harness.Server, args ...string) float64 {
	if err := os.RemoveAll(s.DataDir); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	s.Start(args...)
	d := time.Since(began).Seconds()
	s.Stop()
	return d
}

func sqliteOps(t *testing.T, p plan, tg *target, rep *Report) {
	tg.kube.Stop()
	cold := tg.cold
	for len(cold) < p.reps {
		cold = append(cold, timeStart(t, tg.kube))
	}
	addOp(t, rep, tg.name, "cold start to API ready", cold)
}

// stopAll stops the servers at once.
func stopAll(ss []*harness.Server) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.Stop() })
	}
	wg.Wait()
}

// haOps times, p.reps times each: a cold start of a new cluster's first
// server; failover (the leader killed, until a write through a follower is
// acknowledged, at the datastore and through the apiserver); and the killed
// server, its member removed and its data wiped, joining again as a voter.
func haOps(t *testing.T, p plan, tg *target, rep *Report, kind string) {
	if *quick && kind == "etcd" {
		return // the same code runs on Dqlite, whose joins are faster
	}
	c := tg.cluster
	var failDS, failKube, join []float64
	for range p.reps {
		leader := c.Leader(t, c.Servers[0])
		var leaderMember string
		for _, m := range c.Members(t, leader) {
			if m.Leader {
				leaderMember = m.Name
			}
		}
		f := follower(c, leader)
		ds := datastoreClient(t, c, f, kind)
		cs := kubeClient(t, f)
		took := failover(t, func() { leader.Kill() }, dsWrite(ds), kubeWrite(cs))
		ds.Close()
		failDS, failKube = append(failDS, took[0]), append(failKube, took[1])

		if out, code := f.Hakube("etcd", "member", "remove", leaderMember); code != 0 {
			t.Fatalf("removing %s: %s", leaderMember, out)
		}
		if err := os.RemoveAll(leader.DataDir); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := leader.StartAsync("--server", f.URL()); err != nil {
			t.Fatal(err)
		}
		waitVoter(t, c, f, leader)
		join = append(join, time.Since(began).Seconds())
		if err := leader.WaitReady(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	addOp(t, rep, tg.name, "failover: first write acknowledged (datastore)", failDS)
	addOp(t, rep, tg.name, "failover: first write acknowledged (apiserver)", failKube)
	addOp(t, rep, tg.name, "join to voter (log catch-up, new cluster)", tg.logJoins)
	addOp(t, rep, tg.name, "join to voter", join)

	var stallDS, stallKube []float64
	for range p.reps {
		leader := c.Leader(t, c.Servers[0])
		f := follower(c, leader)
		ds := datastoreClient(t, c, f, kind)
		took := stall(t, func() { leader.Stop() }, dsWrite(ds), kubeWrite(kubeClient(t, f)))
		ds.Close()
		stallDS, stallKube = append(stallDS, took[0]), append(stallKube, took[1])
		leader.Start()
	}
	addOp(t, rep, tg.name, "graceful leader stop: longest write stall (datastore)", stallDS)
	addOp(t, rep, tg.name, "graceful leader stop: longest write stall (apiserver)", stallKube)

	stopAll(c.Servers) // cold starts have the machine to themselves
	fresh := c.Net.Hosts[3].Server(t, "cold")
	fresh.Env = []string{"HAKUBE_TOKEN=bench-secret"}
	cold := tg.cold
	for len(cold) < p.reps {
		cold = append(cold, timeStart(t, fresh, "--cluster-init", "--datastore="+kind))
	}
	addOp(t, rep, tg.name, "cold start to API ready", cold)
}

// waitVoter waits until s lists joiner's member as a healthy voter.
func waitVoter(t *testing.T, c *harness.Cluster, s, joiner *harness.Server) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		for _, m := range c.Members(t, s) {
			if c.ServerOf(m.Name) == joiner && !m.Learner && m.Healthy {
				return
			}
		}
		if !joiner.Running() {
			t.Fatalf("%s exited while joining:\n%s", joiner.Name, joiner.LogTail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s is not a voter after 3 minutes", joiner.Name)
}

func kubeClient(t *testing.T, s *harness.Server) *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(restConfig(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// attempt is one write; failover retries it.
type attempt func(ctx context.Context, n int) error

func dsWrite(cli *clientv3.Client) attempt {
	return func(ctx context.Context, n int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("/bench-failover/%d", n), "x")
		return err
	}
}

func kubeWrite(cs *kubernetes.Clientset) attempt {
	stamp := time.Now().UnixNano()
	return func(ctx context.Context, n int) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("failover-%d-%d", stamp, n)}}
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		return err
	}
}

// failover checks that each write succeeds, then kills and returns, for each
// write, the seconds from the kill until one started after it succeeded.
func failover(t *testing.T, kill func(), writes ...attempt) []float64 {
	for i, w := range writes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for n := 0; ; n++ {
			if err := w(ctx, -n-1); err == nil {
				break
			} else if ctx.Err() != nil {
				t.Fatalf("write %d before the kill: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
	}
	killed := time.Now()
	kill()
	out := make([]float64, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() {
			for n := 0; time.Since(killed) < 2*time.Minute; n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				err := w(ctx, n)
				cancel()
				if err == nil {
					out[i] = time.Since(killed).Seconds()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			out[i] = -1
		})
	}
	wg.Wait()
	for i, s := range out {
		if s < 0 {
			t.Fatalf("write %d: nothing acknowledged in 2 minutes after the kill", i)
		}
	}
	return out
}

// stall writes one at a time with each attempt from a second before stop
// (which returns once the process exited) until a second after it, and
// returns, for each, the longest time between two acknowledged writes.
func stall(t *testing.T, stop func(), writes ...attempt) []float64 {
	done := make(chan struct{})
	out := make([]float64, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() {
			last := time.Now()
			for n := 0; ; n++ {
				select {
				case <-done:
					out[i] = max(out[i], time.Since(last).Seconds())
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := w(ctx, n)
				cancel()
				if err == nil {
					now := time.Now()
					out[i] = max(out[i], now.Sub(last).Seconds())
					last = now
				}
			}
		})
	}
	time.Sleep(time.Second)
	stop()
	time.Sleep(time.Second)
	close(done)
	wg.Wait()
	return out
}

func addOp(t *testing.T, rep *Report, target, op string, samples []float64) {
	o := Op{Target: target, Operation: op, Samples: samples}
	s := slices.Sorted(slices.Values(samples))
	o.Median, o.Max = median(s), s[len(s)-1]
	t.Logf("%-26s %-48s median %6.2f s  max %6.2f s  (n=%d)", target, op, o.Median, o.Max, len(s))
	rep.Ops = append(rep.Ops, o)
}
