// Package conformance runs the Kubernetes conformance suite (e2e.test, built
// from the kubernetes module hakube runs) against the HA topology of the K3s
// page: three servers that are nodes too, and an agent, each on a network
// namespace host. It is driven by 'make conformance' and
// 'make conformance-quick', which build e2e.test, ginkgo, kubectl and the
// images and pass them in the environment; 'go test ./test/...' alone skips
// it.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/test/harness"
)

// settings are what the Makefile passes.
type settings struct {
	e2e, ginkgo, kubectl string
	images               []string // image tarballs every node imports
	results              string   // directory for e2e.log, the junit XML and summary.md
	datastore            string   // etcd or dqlite
	focus, skip          string
	focusName            string        // focus as the summary names it
	fault                string        // "" or sigkill-leader
	faultEvery           time.Duration // time between two kills
	parallel             int           // ginkgo processes
	timeout              time.Duration // of the whole suite
	summary              string        // the docs file whose section this run rewrites ("" for none)
	name                 string        // the run's name in that file, e.g. etcd or dqlite-sigkill-leader
}

// focusFromFile is a ginkgo focus matching every spec whose name contains a
// line of file (# starts a comment line): the specs' names, as printed.
func focusFromFile(t *testing.T, file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			names = append(names, regexp.QuoteMeta(l))
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s lists no spec", file)
	}
	return strings.Join(names, "|")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func load(t *testing.T) settings {
	s := settings{
		e2e:       os.Getenv("CONFORMANCE_E2E"),
		ginkgo:    os.Getenv("CONFORMANCE_GINKGO"),
		kubectl:   os.Getenv("CONFORMANCE_KUBECTL"),
		results:   os.Getenv("CONFORMANCE_RESULTS"),
		datastore: envOr("DATASTORE", "etcd"),
		focus:     envOr("FOCUS", `\[Conformance\]`),
		skip:      os.Getenv("SKIP"),
		fault:     os.Getenv("FAULT"),
		summary:   os.Getenv("CONFORMANCE_SUMMARY"),
	}
	s.focusName = "`" + s.focus + "`"
	if f := os.Getenv("FOCUS_FILE"); f != "" {
		s.focus, s.focusName = focusFromFile(t, f), "the specs listed in "+filepath.Base(f)
	}
	if s.e2e == "" {
		t.Skip("run by 'make conformance' or 'make conformance-quick' (CONFORMANCE_E2E names e2e.test)")
	}
	for _, p := range []string{s.e2e, s.ginkgo, s.kubectl} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (make conformance builds it)", err)
		}
	}
	if s.results == "" {
		t.Fatal("CONFORMANCE_RESULTS names the results directory")
	}
	for _, f := range strings.Fields(os.Getenv("CONFORMANCE_IMAGES")) {
		s.images = append(s.images, f)
	}
	if len(s.images) == 0 {
		t.Fatal("CONFORMANCE_IMAGES names the image tarballs (make conformance-images builds them)")
	}
	switch s.datastore {
	case "etcd", "dqlite":
	default:
		t.Fatalf("DATASTORE=%s: the HA datastores are etcd and dqlite", s.datastore)
	}
	switch s.fault {
	case "", "sigkill-leader":
	default:
		t.Fatalf("FAULT=%s: the fault is sigkill-leader (or none)", s.fault)
	}
	var err error
	if s.parallel, err = strconv.Atoi(envOr("PARALLEL", "4")); err != nil || s.parallel < 1 {
		t.Fatalf("PARALLEL=%s: a number of ginkgo processes, at least 1", os.Getenv("PARALLEL"))
	}
	if s.timeout, err = time.ParseDuration(envOr("CONFORMANCE_TIMEOUT", "5h")); err != nil {
		t.Fatalf("CONFORMANCE_TIMEOUT: %v", err)
	}
	if s.faultEvery, err = time.ParseDuration(envOr("FAULT_EVERY", "5m")); err != nil {
		t.Fatalf("FAULT_EVERY: %v", err)
	}
	s.name = s.datastore
	if s.fault != "" {
		s.name += "-" + s.fault
	}
	return s
}

// TestConformance forms the cluster, runs the suite and writes the results.
// It fails when a spec fails.
func TestConformance(t *testing.T) {
	cfg := load(t)
	// An interrupt of 'make conformance' (^C, SIGTERM) ends the suite (ginkgo
	// ends its specs and writes its report) or the cluster's forming, and the
	// test then tears the cluster down: dying with the signal would leave it
	// running.
	interrupted, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	c, agent := formCluster(interrupted, t, cfg)
	var clients []kubernetes.Interface
	for _, s := range c.Servers {
		clients = append(clients, s.Client())
	}
	t.Logf("cluster of %d nodes ready in %s", len(c.Servers)+1, time.Since(began).Round(time.Second))

	// e2e.test runs on the agent's host and reaches the servers through the
	// agent's load balancer, so a killed server is not the suite's only way in.
	kubeconfig := filepath.Join(t.TempDir(), "e2e-kubeconfig")
	writeKubeconfig(t, c.Servers[0].Kubeconfig, kubeconfig, "https://127.0.0.1:6444")

	ctx, stopFault := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var faults faultLog
	if cfg.fault != "" {
		wg.Add(1)
		bin := harness.Binary(t)
		go func() { defer wg.Done(); killLeaders(ctx, t, c, bin, cfg.faultEvery, &faults) }()
	}
	// The agent's node must stay Ready throughout, fault or not.
	var notReady []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := nodeReady(clients, agent.Name); err != nil {
				notReady = append(notReady, time.Now().Format(time.RFC3339)+" "+err.Error())
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
		}
	}()

	if err := os.MkdirAll(cfg.results, 0o755); err != nil {
		t.Fatal(err)
	}
	suiteStart := time.Now()
	runErr := runSuite(interrupted, t, cfg, agent.Wrap, kubeconfig)
	elapsed := time.Since(suiteStart)
	stopFault()
	wg.Wait()

	saveLogs(t, cfg.results, c, agent)

	res, err := parseJunit(filepath.Join(cfg.results, "junit_01.xml"))
	if err != nil {
		t.Fatalf("the suite wrote no report (%v); run error: %v; see %s", err, runErr, filepath.Join(cfg.results, "e2e.log"))
	}
	res.Name, res.Datastore, res.Fault, res.Duration, res.Kills, res.NotReady = cfg.name, cfg.datastore, cfg.fault, elapsed, faults.list(), notReady
	res.Focus, res.Skip = cfg.focusName, cfg.skip
	if err := os.WriteFile(filepath.Join(cfg.results, "summary.md"), []byte(res.Markdown()), 0o644); err != nil {
		t.Fatal(err)
	}
	// make conformance FOCUS_FILE=<results>/failed.txt runs the failed specs again.
	if err := os.WriteFile(filepath.Join(cfg.results, "failed.txt"), []byte(res.FailedList()), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg.summary != "" {
		if err := res.UpdateDoc(cfg.summary, cfg.results); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("conformance %s: %d passed, %d failed of %d in %s; results in %s", cfg.name, res.Passed, len(res.Failed), res.Total(), elapsed.Round(time.Second), cfg.results)
	for _, f := range res.Failed {
		t.Errorf("FAILED %s\n    %s", f.Name, firstLine(f.Reason))
	}
	for _, n := range notReady {
		t.Errorf("the agent's node was not Ready: %s", n)
	}
	if res.Total() == 0 {
		t.Errorf("no spec ran (focus %q, skip %q)", cfg.focus, cfg.skip)
	}
	if runErr != nil && len(res.Failed) == 0 {
		t.Errorf("the suite failed with no failed spec: %v (see %s)", runErr, filepath.Join(cfg.results, "e2e.log"))
	}
}

// formCluster starts three servers that are nodes and an agent, gives every
// node the images, and waits until the four nodes are Ready and CoreDNS runs.
func formCluster(ctx context.Context, t *testing.T, cfg settings) (*harness.Cluster, *harness.Agent) {
	nw := harness.NewNodeNetwork(t, 4)
	c := &harness.Cluster{Net: nw}
	if cfg.datastore == "dqlite" {
		c.InitArgs = []string{"--datastore=dqlite"}
	}
	for i := range 3 {
		s := nw.Hosts[i].NodeServer(t, fmt.Sprintf("s%d", i+1))
		s.Env = []string{"HAKUBE_TOKEN=conformance-secret"}
		addImages(t, s.Layout().Images(), cfg.images)
		c.Servers = append(c.Servers, s)
	}
	c.Form(t)
	a := nw.Hosts[3].Agent(t, "agent-1", c.Servers[0], c.Servers[0].TokenFile())
	addImages(t, a.Layout().Images(), cfg.images)
	a.Start()
	cs := c.Servers[0].Client()
	harness.WaitFor(ctx, t, 5*time.Minute, "four Ready nodes", func() error {
		for _, n := range []string{"s1", "s2", "s3", "agent-1"} {
			if err := harness.NodeReady(cs, n); err != nil {
				return err
			}
		}
		return nil
	})
	harness.WaitFor(ctx, t, 5*time.Minute, "CoreDNS ready", func() error {
		d, err := cs.AppsV1().Deployments("kube-system").Get(context.Background(), "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas < 1 {
			return fmt.Errorf("%d of %d replicas ready", d.Status.ReadyReplicas, d.Status.Replicas)
		}
		return nil
	})
	return c, a
}

// saveLogs keeps the servers' and the agent's logs (their data dirs go with
// the test) in <results>/logs, to find why a spec failed.
func saveLogs(t *testing.T, results string, c *harness.Cluster, a *harness.Agent) {
	dir := filepath.Join(results, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	procs := []*harness.Process{a.Process}
	for _, s := range c.Servers {
		procs = append(procs, s.Process)
	}
	for _, p := range procs {
		if err := os.WriteFile(filepath.Join(dir, p.Name+".log"), []byte(p.FullLog()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// addImages links (or copies) the image tarballs into a node's image
// directory before the node starts, as a user of an air-gapped node does.
func addImages(t *testing.T, dir string, images []string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, src := range images {
		dst := filepath.Join(dir, filepath.Base(src))
		if err := os.Link(src, dst); err == nil {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("image tarball: %v (make conformance-images builds it)", err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeKubeconfig writes the admin kubeconfig with its server replaced.
func writeKubeconfig(t *testing.T, from, to, server string) {
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	if err := clientcmd.WriteToFile(*cfg, to); err != nil {
		t.Fatal(err)
	}
}

// runSuite runs ginkgo with e2e.test on the agent's host; its output goes to
// e2e.log, and e2e.test writes junit_01.xml into the results directory
// (--report-dir) from the report ginkgo gathers from all its processes.
func runSuite(ctx context.Context, t *testing.T, cfg settings, wrap []string, kubeconfig string) error {
	log, err := os.Create(filepath.Join(cfg.results, "e2e.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	ginkgoArgs := []string{cfg.ginkgo, "--nodes=" + strconv.Itoa(cfg.parallel), "--timeout=" + cfg.timeout.String(),
		"--no-color", "-v", "--focus=" + cfg.focus}
	if cfg.skip != "" {
		ginkgoArgs = append(ginkgoArgs, "--skip="+cfg.skip)
	}
	e2eArgs := []string{"--kubeconfig=" + kubeconfig, "--provider=skeleton", "--kubectl-path=" + cfg.kubectl,
		"--system-pods-startup-timeout=10m",
		"--report-dir=" + cfg.results, "--dump-logs-on-failure=false"}
	argv := append(append(append(append([]string{}, wrap...), ginkgoArgs...), cfg.e2e, "--"), e2eArgs...)
	t.Logf("running %s", strings.Join(argv, " "))
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout+10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// The interrupt goes to ginkgo's process group: its e2e.test processes
	// end their specs on it, and ginkgo alone does not pass it on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.Stdout, cmd.Stderr = log, log
	// Outside any Go module: ginkgo compares its version with the module's
	// ginkgo there (hakube's is not the one e2e.test links) and warns.
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	// After an interrupt, ginkgo has 5 minutes to clean up before it is killed.
	cmd.WaitDelay = 5 * time.Minute
	progress := time.NewTicker(5 * time.Minute)
	defer progress.Stop()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return err
	}
	started := time.Now()
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			return err
		case <-progress.C:
			t.Logf("suite running for %s: %s", time.Since(started).Round(time.Minute), progressLine(log.Name()))
		}
	}
}

// nodeReady is the node's Ready condition as the cluster sees it: asked of
// each server in turn, so the server a fault has just killed is not taken for
// the node being down. It fails when an answering server says not Ready, or
// when no server answers.
func nodeReady(clients []kubernetes.Interface, name string) error {
	var errs []error
	for _, cs := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return harness.ReadyCondition(n)
	}
	return fmt.Errorf("no server answered: %w", errors.Join(errs...))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
