package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/test/harness"
)

// target is a running system under test.
type target struct {
	name string
	// writer reaches the leader's datastore; watcher a follower's (the
	// same member on one server), as apiservers on every server watch theirs.
	writer, watcher *clientv3.Client
	// serializable: kine's etcd API, which hakube's SQLite and Dqlite
	// datastores serve, refuses serializable reads.
	serializable bool
	// compacts: the datastore compacts when asked. kine's does so only
	// on its own schedule (a Compact request is a no-op), as hakube's
	// single-server SQLite, which is kine.
	compacts bool
	// kube is the server whose apiserver the Kubernetes workloads use: the
	// leader, or a hakube server in front of a peer (--datastore-endpoint).
	kube *harness.Server
	// pids are the processes whose footprint is measured, described by procs.
	pids  func() []int
	procs string
	// profile takes a CPU profile of the leader (nil when it cannot).
	profile func(ctx context.Context, d time.Duration) ([]byte, error)
	// cold holds the cold starts already timed (the target's own start);
	// logJoins the joins of a 3-server target's forming.
	cold, logJoins []float64
	// state a kind's operations need.
	cluster *harness.Cluster
	peer    *etcdPeer
	kine    *kineProc
}

const keySpace = 10000

// measure runs the footprint, datastore and Kubernetes workloads on tg.
func measure(t *testing.T, p plan, tg *target, rep *Report) {
	time.Sleep(p.settle)
	idle := sampleWhile(tg.pids(), func() { time.Sleep(p.settle) })
	rep.Footprint = append(rep.Footprint, footprint(tg.name, tg.procs, "idle", idle))

	value := make([]byte, 256)
	_, _ = rand.Read(value)
	put := func(ctx context.Context, i int) error {
		_, err := tg.writer.Put(ctx, fmt.Sprintf("/bench/%05d", i%keySpace), string(value))
		return err
	}
	get := func(opts ...clientv3.OpOption) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error {
			_, err := tg.writer.Get(ctx, fmt.Sprintf("/bench/%05d", i%keySpace), opts...)
			return err
		}
	}
	ws := []workload{{"put", 1, put}, {"put", 16, put}, {"put", 64, put}, {"get-linearizable", 16, get()}}
	if tg.serializable {
		ws = append(ws, workload{"get-serializable", 16, get(clientv3.WithSerializable())})
	}
	for _, w := range ws {
		var r Result
		if w.name == "put" && w.clients == 16 {
			var f sample
			f, r = loaded(t, p, tg, rep, w)
			rep.Footprint = append(rep.Footprint, footprint(tg.name, tg.procs, "put×16", f))
		} else {
			r = run(t, w, p.dur)
		}
		record(t, rep, tg, "datastore", r)
	}
	record(t, rep, tg, "datastore", watchLatency(t, tg, p.dur))
	if tg.compacts {
		compactionStall(t, p, tg, rep)
	}

	for _, w := range kubeWorkloads(t, tg.kube, p.pool) {
		var r Result
		if w.name == "k8s-create" && w.clients == 16 {
			f := sampleWhile(tg.pids(), func() { r = run(t, w, p.dur) })
			rep.Footprint = append(rep.Footprint, footprint(tg.name, tg.procs, "create×16", f))
		} else {
			r = run(t, w, p.dur)
		}
		record(t, rep, tg, "kubernetes", r)
	}
}

// loaded runs w while sampling the footprint and, where the target allows,
// profiling the leader's CPU.
func loaded(t *testing.T, p plan, tg *target, rep *Report, w workload) (sample, Result) {
	var r Result
	var prof []byte
	var profErr error
	f := sampleWhile(tg.pids(), func() {
		var wg sync.WaitGroup
		if tg.profile != nil {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), p.profile+30*time.Second)
				defer cancel()
				prof, profErr = tg.profile(ctx, p.profile)
			})
		}
		r = run(t, w, p.dur)
		wg.Wait()
	})
	if profErr != nil {
		t.Errorf("profiling %s: %v", tg.name, profErr)
	}
	if prof != nil {
		rep.Profiles = append(rep.Profiles, saveProfile(t, p, rep, tg.name, "put×16", prof))
	}
	return f, r
}

func record(t *testing.T, rep *Report, tg *target, level string, r Result) {
	r.Target, r.Level = tg.name, level
	t.Logf("%-26s %-18s %3d clients: %8.0f ops/s  p50 %7.2f ms  p99 %8.2f ms  errors %d", r.Target, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors)
	rep.Results = append(rep.Results, r)
}

// workload is an operation run by clients concurrently; i numbers the
// operations so that each client touches its own keys.
type workload struct {
	name    string
	clients int
	op      func(ctx context.Context, i int) error
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
		wg.Go(func() {
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
		})
	}
	wg.Wait()
	r := summarize(lat, time.Since(began))
	r.Workload, r.Clients, r.Errors = w.name, w.clients, errs
	if len(lat) == 0 {
		t.Errorf("%s at %d clients: no operation succeeded (%d errors)", w.name, w.clients, errs)
	}
	return r
}

// summarize sorts lat and fills in the counts, percentiles and CDF.
func summarize(lat []time.Duration, elapsed time.Duration) Result {
	slices.Sort(lat)
	r := Result{Ops: len(lat), OpsPerSec: float64(len(lat)) / elapsed.Seconds()}
	if len(lat) == 0 {
		return r
	}
	at := func(q float64) float64 { return ms(lat[min(len(lat)-1, int(q*float64(len(lat))))]) }
	r.P50ms, r.P99ms = at(0.50), at(0.99)
	for i := range 101 {
		r.CDFms = append(r.CDFms, at(float64(i)/100))
	}
	return r
}

// compactionStall writes p.history revisions, then compacts them all while
// one client writes, and records the longest time between two of its
// acknowledged writes and how long the compaction took.
func compactionStall(t *testing.T, p plan, tg *target, rep *Report) {
	value := make([]byte, 256)
	_, _ = rand.Read(value)
	var written sync.WaitGroup
	var failed atomic.Int64
	for c := range 64 {
		written.Go(func() {
			for i := c; i < p.history; i += 64 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := tg.writer.Put(ctx, fmt.Sprintf("/bench-compact/%05d", i%keySpace), string(value)); err != nil {
					failed.Add(1)
				}
				cancel()
			}
		})
	}
	written.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := tg.writer.Get(ctx, "/bench-compact/00000")
	cancel()
	if err != nil {
		t.Fatalf("%s: reading the revision to compact to: %v", tg.name, err)
	}
	done := make(chan struct{})
	var longest time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		last := time.Now()
		for n := 0; ; n++ {
			select {
			case <-done:
				longest = max(longest, time.Since(last))
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := tg.writer.Put(ctx, "/bench-compact-writer", strconv.Itoa(n))
			cancel()
			if err == nil {
				longest, last = max(longest, time.Since(last)), time.Now()
			}
		}
	})
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Minute)
	_, err = tg.writer.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	cancel()
	took := time.Since(began)
	time.Sleep(200 * time.Millisecond)
	close(done)
	wg.Wait()
	if err != nil {
		t.Errorf("%s: compacting %d revisions: %v", tg.name, p.history, err)
		return
	}
	t.Logf("%s: %d revisions written (%d failed), compacted in %.2f s; longest write stall %.1f ms", tg.name, p.history, failed.Load(), took.Seconds(), ms(longest))
	addOp(t, rep, tg.name, fmt.Sprintf("compaction of %dk revisions: longest write stall", p.history/1000), []float64{longest.Seconds()})
	addOp(t, rep, tg.name, fmt.Sprintf("compaction of %dk revisions: duration", p.history/1000), []float64{took.Seconds()})
}

// watchLatency is the time from sending a put to the leader until a watcher
// on a follower receives its event, one put at a time.
func watchLatency(t *testing.T, tg *target, d time.Duration) Result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const prefix = "/bench-watch/"
	wch := tg.watcher.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		t.Fatalf("%s: watch not created: %v", tg.name, resp.Err())
	}
	var mu sync.Mutex
	sent := map[int]time.Time{}
	var lat []time.Duration
	got := make(chan struct{}, 1)
	go func() {
		for resp := range wch {
			now := time.Now()
			for _, ev := range resp.Events {
				n, err := strconv.Atoi(string(ev.Kv.Value))
				if err != nil {
					continue
				}
				mu.Lock()
				if at, ok := sent[n]; ok {
					lat = append(lat, now.Sub(at))
					delete(sent, n)
				}
				mu.Unlock()
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}
	}()
	errs := 0
	began := time.Now()
	for n := 0; time.Since(began) < d; n++ {
		mu.Lock()
		sent[n] = time.Now()
		mu.Unlock()
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := tg.writer.Put(pctx, fmt.Sprintf("%s%d", prefix, n%100), strconv.Itoa(n))
		pcancel()
		if err != nil {
			errs++
			continue
		}
		select { // one event in flight at a time: latency, not throughput
		case <-got:
		case <-time.After(5 * time.Second):
			errs++
		}
	}
	elapsed := time.Since(began)
	mu.Lock()
	defer mu.Unlock()
	r := summarize(lat, elapsed)
	r.Workload, r.Clients, r.Errors = "watch", 1, errs
	if len(lat) == 0 {
		t.Errorf("%s: no watch event arrived (%d errors)", tg.name, errs)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fsync is the latency of a 4 KiB write plus fdatasync in the directory the
// servers' data lives in: the floor of a durable write.
func fsync(t *testing.T) Latency {
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
	r := summarize(lat, time.Second)
	return r.Latency
}
