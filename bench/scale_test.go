package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// ScaleReport is one 'make bench-scale' run: a 3-server cluster per
// datastore, kwok playing the kubelets of many nodes, many pods.
type ScaleReport struct {
	Date    string        `json:"date"`
	Host    string        `json:"host"`
	Commit  string        `json:"commit"`
	CPUs    int           `json:"cpus"`
	Nodes   int           `json:"nodes"`
	Pods    int           `json:"pods"`
	Results []ScaleResult `json:"results"`
}

// ScaleResult is one datastore's run. Latencies are the test's own calls,
// spread over the three apiservers: pod creates (mutating), and lists
// during the creates, of one namespace's pods and of every pod.
type ScaleResult struct {
	Datastore       string      `json:"datastore"`
	NodesReadySecs  float64     `json:"nodesReadySeconds"`
	PodsRunningSecs float64     `json:"podsRunningSeconds"`
	Create          Latency     `json:"create"`
	CreateErrors    int         `json:"createErrors"`
	ListNamespace   Latency     `json:"listNamespace"`
	ListAll         Latency     `json:"listAll"`
	Servers         []ServerMem `json:"servers"`
}

// ServerMem is a server's memory with every pod running.
type ServerMem struct {
	Name   string  `json:"name"`
	Leader bool    `json:"leader"`
	RSSMiB float64 `json:"rssMiB"`
	Anon   float64 `json:"anonMiB"`
}

// The Kubernetes SLOs the scale run is judged on (p99).
const (
	sloMutatingMs      = 1000
	sloListNamespaceMs = 5000
	sloListAllMs       = 30000
	scaleNamespaces    = 10
)

// TestScale runs 'make bench-scale' (HAKUBE_BENCH_SCALE=1): SCALE_NODES
// (500) nodes and SCALE_PODS (10000) pods on each of SCALE_DATASTORES
// (etcd,dqlite).
func TestScale(t *testing.T) {
	if os.Getenv("HAKUBE_BENCH_SCALE") == "" {
		t.Skip("the scale run is 'make bench-scale'")
	}
	host, _ := os.Hostname()
	rep := &ScaleReport{Date: time.Now().UTC().Format(time.RFC3339), Host: host, Commit: os.Getenv("BENCH_COMMIT"), CPUs: runtime.NumCPU(),
		Nodes: harness.EnvInt("SCALE_NODES", 500), Pods: harness.EnvInt("SCALE_PODS", 10000)}
	kinds := "etcd,dqlite"
	if v := os.Getenv("SCALE_DATASTORES"); v != "" {
		kinds = v
	}
	for kind := range strings.SplitSeq(kinds, ",") {
		t.Run(kind, func(t *testing.T) { rep.Results = append(rep.Results, scaleRun(t, rep, kind)) })
	}
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = "results"
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(out, day(&Report{Date: rep.Date})+"-"+rep.Host+"-scale")
	js, _ := json.MarshalIndent(rep, "", "  ")
	md := scaleMarkdown(rep)
	for file, data := range map[string][]byte{b + ".json": js, b + ".md": []byte(md)} {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("report: %s.md\n%s", b, md)
}

func scaleRun(t *testing.T, rep *ScaleReport, kind string) ScaleResult {
	ctx := context.Background()
	res := ScaleResult{Datastore: kind}
	nw := harness.NewNetwork(t, 3)
	c := harness.NewEtcdCluster(t, nw, 3, "scale-secret")
	// A /24 of pod IPs per node: the default /16 holds 256 nodes.
	for _, s := range c.Servers {
		s.Args = append(s.Args, "--cluster-cidr=10.64.0.0/14")
	}
	c.InitArgs = []string{"--datastore=" + kind}
	c.Form(t)
	harness.StartKwok(t, c.Servers[0])
	clients := make([]*kubernetes.Clientset, len(c.Servers))
	for i, s := range c.Servers {
		cfg := s.RESTConfig()
		cfg.ContentType = "application/vnd.kubernetes.protobuf" // as controllers talk
		var err error
		if clients[i], err = kubernetes.NewForConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}

	began := time.Now()
	parallel(t, rep.Nodes, 16, func(i int) error {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kwok-%04d", i), Annotations: map[string]string{harness.KwokAnnotation: "fake"},
				Labels: map[string]string{"type": "kwok", "kubernetes.io/hostname": fmt.Sprintf("kwok-%04d", i)}},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: harness.KwokTaint, Value: "fake", Effect: corev1.TaintEffectNoSchedule}}},
		}
		_, err := clients[i%len(clients)].CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		return err
	})
	harness.WaitFor(ctx, t, 10*time.Minute, fmt.Sprintf("%d nodes Ready", rep.Nodes), func() error {
		l, err := clients[0].CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if err != nil {
			return err
		}
		ready := 0
		for i := range l.Items {
			if harness.ReadyCondition(&l.Items[i]) == nil {
				ready++
			}
		}
		if ready < rep.Nodes {
			return fmt.Errorf("%d of %d Ready", ready, rep.Nodes)
		}
		return nil
	})
	res.NodesReadySecs = time.Since(began).Seconds()
	t.Logf("%s: %d nodes Ready in %.1f s", kind, rep.Nodes, res.NodesReadySecs)
	for i := range scaleNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%d", i)}}
		if _, err := clients[0].CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Lists run while the pods are created, as controllers and users list
	// a busy cluster: one namespace's pods every 2 s, every pod every 10 s.
	listCtx, stopLists := context.WithCancel(ctx)
	var listNS, listAll []time.Duration
	var lists sync.WaitGroup
	lister := func(every time.Duration, ns string, into *[]time.Duration) {
		for i := 0; ; i++ {
			select {
			case <-listCtx.Done():
				return
			case <-time.After(every):
			}
			start := time.Now()
			if _, err := clients[i%len(clients)].CoreV1().Pods(ns).List(listCtx, metav1.ListOptions{}); err != nil {
				if listCtx.Err() == nil {
					t.Errorf("list pods in %q: %v", ns, err)
				}
				continue
			}
			*into = append(*into, time.Since(start))
		}
	}
	lists.Go(func() { lister(2*time.Second, "scale-0", &listNS) })
	lists.Go(func() { lister(10*time.Second, "", &listAll) })

	began = time.Now()
	var creates []time.Duration
	var mu sync.Mutex
	var errs atomic.Int64
	parallel(t, rep.Pods, 16, func(i int) error {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Labels: map[string]string{"app": "scale"}},
			Spec: corev1.PodSpec{
				Containers:   []corev1.Container{{Name: "c", Image: "registry.invalid/never-pulled:1"}},
				NodeSelector: map[string]string{"type": "kwok"},
				Tolerations:  []corev1.Toleration{{Key: harness.KwokTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			},
		}
		start := time.Now()
		_, err := clients[i%len(clients)].CoreV1().Pods(fmt.Sprintf("scale-%d", i%scaleNamespaces)).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			errs.Add(1)
			return nil // counted; the SLO judges the calls that were made
		}
		mu.Lock()
		creates = append(creates, time.Since(start))
		mu.Unlock()
		return nil
	})
	t.Logf("%s: %d pods created in %.1f s (%d errors)", kind, rep.Pods, time.Since(began).Seconds(), errs.Load())
	harness.WaitFor(ctx, t, 20*time.Minute, fmt.Sprintf("%d pods Running", rep.Pods), func() error {
		n := 0
		for i := range scaleNamespaces {
			l, err := clients[0].CoreV1().Pods(fmt.Sprintf("scale-%d", i)).List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"})
			if err != nil {
				return err
			}
			n += len(l.Items)
		}
		if n < rep.Pods-int(errs.Load()) {
			return fmt.Errorf("%d of %d Running", n, rep.Pods)
		}
		return nil
	})
	res.PodsRunningSecs = time.Since(began).Seconds()
	stopLists()
	lists.Wait()
	res.CreateErrors = int(errs.Load())
	// The bench's own percentiles (summarize); its throughput is not used.
	latency := func(d []time.Duration) Latency { return summarize(d, time.Since(began)).Latency }
	res.Create, res.ListNamespace, res.ListAll = latency(creates), latency(listNS), latency(listAll)
	t.Logf("%s: every pod Running %.1f s after the first create; create p99 %.0f ms, list of a namespace p99 %.0f ms (n=%d), of all p99 %.0f ms (n=%d)",
		kind, res.PodsRunningSecs, res.Create.P99ms, res.ListNamespace.P99ms, len(listNS), res.ListAll.P99ms, len(listAll))

	// Memory once the cluster has settled with every pod running.
	time.Sleep(10 * time.Second)
	leader := c.Leader(t, c.Servers[0])
	for _, s := range c.Servers {
		rss, anon := memMiB([]int{s.Pid()})
		res.Servers = append(res.Servers, ServerMem{Name: s.Name, Leader: s == leader, RSSMiB: rss, Anon: anon})
	}
	return res
}

// parallel runs fn(0..n-1) on workers goroutines; the first error fails the test.
func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func scaleMarkdown(rep *ScaleReport) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Scale run, %s on %s (commit %s)\n\n", rep.Date, rep.Host, rep.Commit)
	w("%d CPUs. Three hakube servers on network-namespace hosts of this machine; kwok (sigs.k8s.io/kwok) plays the "+
		"kubelets of %d nodes; the test creates %d pods in %d namespaces with 16 workers spread over the three "+
		"apiservers, while it lists one namespace's pods every 2 s and every pod every 10 s (protobuf, as controllers). "+
		"Latencies are the test's own calls; SLOs are Kubernetes' (p99): mutating %d ms, list of a namespace %d ms, "+
		"of the cluster %d ms.\n\n", rep.CPUs, rep.Nodes, rep.Pods, scaleNamespaces, sloMutatingMs, sloListNamespaceMs, sloListAllMs)
	w("| datastore | nodes Ready s | pods Running s | create p50 / p99 ms | errors | list namespace p50 / p99 ms | list all p50 / p99 ms | SLOs | leader RSS / anonymous MiB | followers' RSS MiB |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		slo := "met"
		if r.Create.P99ms > sloMutatingMs || r.ListNamespace.P99ms > sloListNamespaceMs || r.ListAll.P99ms > sloListAllMs {
			slo = "**missed**"
		}
		var leader, followers []string
		for _, s := range r.Servers {
			if s.Leader {
				leader = append(leader, fmt.Sprintf("%.0f / %.0f", s.RSSMiB, s.Anon))
			} else {
				followers = append(followers, fmt.Sprintf("%.0f", s.RSSMiB))
			}
		}
		w("| %s | %.1f | %.1f | %.0f / %.0f | %d | %.0f / %.0f | %.0f / %.0f | %s | %s | %s |\n", r.Datastore, r.NodesReadySecs, r.PodsRunningSecs,
			r.Create.P50ms, r.Create.P99ms, r.CreateErrors, r.ListNamespace.P50ms, r.ListNamespace.P99ms, r.ListAll.P50ms, r.ListAll.P99ms,
			slo, strings.Join(leader, ""), strings.Join(followers, ", "))
	}
	return b.String()
}
