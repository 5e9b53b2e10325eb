package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// Node target names, as the report shows them.
const (
	hakubeNode  = "hakube server with its node (SQLite)"
	hakubeAgent = "hakube agent"
	nodeProcs   = "hakube, its containerd and the pods' shims"
)

// nodesBench measures the smallest cluster with nodes: a server that is a
// node (on the default SQLite) and one agent, each on its own host. It takes
// both nodes' idle footprints, then the pod startup latency of bursts of
// pods from a local image spread over the two nodes.
func nodesBench(t *testing.T, p plan, rep *Report) {
	ctx := context.Background()
	nw := harness.NewNodeNetwork(t, 2)
	s := nw.Hosts[0].NodeServer(t, "server-1")
	harness.AddTestImage(t, s.Layout().Images())
	began := time.Now()
	s.Start()
	cs := s.Client()
	harness.WaitFor(ctx, t, 2*time.Minute, "server-1 Ready", func() error { return harness.NodeReady(cs, "server-1") })
	t.Logf("server with its node: Ready in %.1f s", time.Since(began).Seconds())
	a := nw.Hosts[1].Agent(t, "agent-1", s, s.TokenFile())
	harness.AddTestImage(t, a.Layout().Images())
	began = time.Now()
	a.Start()
	harness.WaitFor(ctx, t, 2*time.Minute, "agent-1 Ready", func() error { return harness.NodeReady(cs, "agent-1") })
	t.Logf("agent: Ready in %.1f s", time.Since(began).Seconds())
	harness.WaitFor(ctx, t, 2*time.Minute, "the system pods running", func() error { return allRunning(ctx, cs) })

	// Both nodes at once, so that neither's sampling window sees the other settle.
	time.Sleep(p.settle)
	bin := filepath.Base(harness.Binary(t))
	hosts := []struct {
		target string
		pids   func() []int
	}{
		{hakubeNode, func() []int { return daemons(nw.Hosts[0], bin) }},
		{hakubeAgent, func() []int { return daemons(nw.Hosts[1], bin) }},
	}
	idle := make([]sample, len(hosts))
	var sampling sync.WaitGroup
	for i, h := range hosts {
		sampling.Go(func() { idle[i] = sampleWhile(h.pids(), func() { time.Sleep(p.settle) }) })
	}
	sampling.Wait()
	for i, h := range hosts {
		t.Logf("%s idle: %s", h.target, describe(h.pids()))
		rep.Footprint = append(rep.Footprint, footprint(h.target, nodeProcs, "idle", idle[i]))
	}

	pods, bursts := 30, 3
	if *quick {
		pods, bursts = 10, 1
	}
	var lat []float64
	busy0, began := machineBusy(t), time.Now()
	for range bursts {
		for _, d := range harness.PodStartup(t, cs, pods) {
			lat = append(lat, d.Seconds())
		}
	}
	// Whether the bursts are bound by this machine's CPUs: everything of
	// both nodes (runc, shims, CNI plugins, containerd, kubelets) and the
	// control plane shares them.
	t.Logf("pod startup: the machine's CPUs were %.0f%% busy during the bursts",
		(machineBusy(t)-busy0)/time.Since(began).Seconds()/float64(runtime.NumCPU())*100)
	addOp(t, rep, hakubeNode, podStartupOp(pods), lat)
}

// machineBusy is the CPU seconds the machine has spent not idle, from /proc/stat.
func machineBusy(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle and iowait are not busy; guest time is in user already
			busy += n
		}
	}
	return float64(busy) / clockTicks
}

func podStartupOp(pods int) string {
	return fmt.Sprintf("pod startup, %d pods at once on 2 nodes (creation → Running seen by a watch)", pods)
}

// allRunning is nil once every pod in the cluster runs.
func allRunning(ctx context.Context, cs kubernetes.Interface) error {
	l, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(l.Items) == 0 {
		return fmt.Errorf("no pods yet")
	}
	for _, p := range l.Items {
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("%s/%s is %s", p.Namespace, p.Name, p.Status.Phase)
		}
	}
	return nil
}

// daemons are the node host's processes that hakube runs: the hakube
// binary's (the server or agent, and containerd) and the shims. Containers
// are the workload's, not the node's.
func daemons(h *harness.Host, bin string) []int {
	var out []int
	for _, pid := range h.NodeProcesses() {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		if err != nil {
			continue
		}
		if name := filepath.Base(exe); name == bin || name == "containerd-shim-runc-v2" {
			out = append(out, pid)
		}
	}
	return out
}

// describe lists each process's command and its memory, for the log.
func describe(pids []int) string {
	var out []string
	for _, pid := range pids {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		args := strings.Split(string(b), "\x00")
		cmd := filepath.Base(args[0])
		if len(args) > 1 && args[1] != "" {
			cmd += " " + args[1]
		}
		rss, anon := memMiB([]int{pid})
		out = append(out, fmt.Sprintf("%s: RSS %.0f MiB, anonymous %.0f", cmd, rss, anon))
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}
