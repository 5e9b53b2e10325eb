package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/test/harness"
)

// TestClusterResetEtcd and TestClusterResetDqlite lose a quorum (two of
// three servers killed), reset the survivor, rejoin the others, and restore
// a snapshot on a fresh machine with only the file and the token.
func TestClusterResetEtcd(t *testing.T) { testClusterReset(t, "etcd") }

func TestClusterResetDqlite(t *testing.T) {
	testClusterReset(t, "dqlite", "--datastore=dqlite", "--etcd-expose-metrics")
}

// restoreObjects is how many objects the snapshot holds: E2E_RESTORE_OBJECTS,
// or a few hundred so that CI stays short.
func restoreObjects(t *testing.T) int {
	if v := os.Getenv("E2E_RESTORE_OBJECTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("E2E_RESTORE_OBJECTS=%q is not a positive number", v)
		}
		return n
	}
	return 300
}

func testClusterReset(t *testing.T, kind string, initArgs ...string) {
	nw := harness.NewNetwork(t, 4)
	c := &cluster{Cluster: harness.NewEtcdCluster(t, nw, 3, secret), t: t}
	fig := figures{}
	defer fig.write(t, "e2e-reset-"+kind+"-figures.json")
	s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]
	formInParallel(t, c, fig, kind+"_reset_", nil, initArgs...)
	if slices.Contains(initArgs, "--etcd-expose-metrics") {
		checkExposedMetrics(t, c)
	}

	n := restoreObjects(t)
	began := time.Now()
	createConfigMaps(t, s1, "kept", n)
	fig.record(t, kind+"_create_"+strconv.Itoa(n)+"_objects", time.Since(began))
	snap := saveSnapshot(t, s1, "before-loss")
	createConfigMaps(t, s2, "after-snapshot", 20)

	// Quorum loss: two servers die; the survivor is stopped by its operator.
	s2.Kill()
	s3.Kill()
	if code := s1.Stop(); code != 0 {
		t.Fatalf("the survivor exited %d on SIGTERM", code)
	}

	began = time.Now()
	s1.Start("--cluster-reset")
	fig.record(t, kind+"_cluster_reset_ready", time.Since(began))
	log := s1.CurrentLog()
	for _, want := range []string{"cluster reset done", "only member", "--server " + s1.URL()} {
		if !strings.Contains(log, want) {
			t.Errorf("the reset server's log lacks %q", want)
		}
	}
	for prefix, want := range map[string]int{"kept": n, "after-snapshot": 20} {
		if got := countConfigMaps(t, s1, prefix); got != want {
			t.Fatalf("after the reset %s lists %d of %d %s configmaps", s1.Name, got, want, prefix)
		}
	}
	createConfigMaps(t, s1, "after-reset", 10)

	// The same command again is refused; a plain start clears the marker.
	s1.Stop()
	if out, code := s1.RunToExit("--cluster-reset"); code == 0 || !strings.Contains(out, "already reset") {
		t.Fatalf("a second --cluster-reset was not refused: exit %d\n%s", code, out)
	}
	s1.Start()

	// The others rejoin with --server, their old data kept aside.
	began = time.Now()
	for _, s := range []*harness.Server{s2, s3} {
		if err := s.StartAsync("--server", s1.URL()); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*harness.Server{s2, s3} {
		if err := s.WaitReady(4 * time.Minute); err != nil {
			t.Fatal(err)
		}
		if backups, _ := filepath.Glob(filepath.Join(s.DataDir, "server", "db", kind+"-removed-*")); len(backups) != 1 {
			t.Errorf("%s did not keep its old %s data aside: %v", s.Name, kind, backups)
		}
	}
	c.waitVoters(s1, 3)
	fig.record(t, kind+"_others_rejoined", time.Since(began))
	for prefix, want := range map[string]int{"kept": n, "after-snapshot": 20, "after-reset": 10} {
		if got := countConfigMaps(t, s3, prefix); got != want {
			t.Fatalf("rejoined %s lists %d of %d %s configmaps", s3.Name, got, want, prefix)
		}
	}
	c.CheckSameConfigMaps(t, "default")
	checkStatus(t, c, s1, kind, nil) // s1 holds the snapshot: the status names it

	restoreOnFreshMachine(t, nw.Hosts[3], snap, kind, n, fig)
}

// checkExposedMetrics scrapes server 1's metrics from another host (it was
// started with --etcd-expose-metrics) and finds server 2's not exposed.
func checkExposedMetrics(t *testing.T, c *cluster) {
	t.Helper()
	from := c.Net.Hosts[2]
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: from.DialContext}}
	resp, err := hc.Get("http://" + c.Net.Hosts[0].IP + ":2381/metrics")
	if err != nil {
		t.Fatalf("scraping server 1's exposed metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"hakube_dqlite_has_leader 1", `hakube_dqlite_members{suffrage="voter"} 3`, `hakube_dqlite_raft_index{kind="applied_index"}`,
		"hakube_dqlite_db_size_bytes", `hakube_supervisor_requests_total{code="200",endpoint="GET /cacerts"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("server 1's metrics lack %q", want)
		}
	}
	if _, err := hc.Get("http://" + c.Net.Hosts[1].IP + ":2381/metrics"); err == nil {
		t.Error("server 2's metrics are reachable on its node IP without --etcd-expose-metrics")
	}
}

// saveSnapshot saves a compressed snapshot on s and returns its file.
func saveSnapshot(t *testing.T, s *harness.Server, name string) snapshot.Meta {
	t.Helper()
	if out, code := s.Hakube("etcd-snapshot", "save", "--name", name, "--compress"); code != 0 {
		t.Fatalf("etcd-snapshot save on %s: exit %d\n%s", s.Name, code, out)
	}
	out, code := s.Hakube("etcd-snapshot", "ls", "-o", "json")
	var list []snapshot.Meta
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "["):]), &list) != nil {
		t.Fatalf("etcd-snapshot ls on %s: exit %d\n%s", s.Name, code, out)
	}
	for _, m := range list {
		if strings.HasPrefix(m.Name, name+"-") {
			return m
		}
	}
	t.Fatalf("snapshot %s not listed:\n%s", name, out)
	return snapshot.Meta{}
}

// restoreOnFreshMachine restores the snapshot on a host that never ran
// hakube, given only the file and the token: a damaged copy and a wrong token
// are refused first, leaving nothing behind.
func restoreOnFreshMachine(t *testing.T, h *harness.Host, snap snapshot.Meta, kind string, n int, fig figures) {
	t.Helper()
	file := strings.TrimPrefix(snap.Location, "file://")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fresh := h.Server(t, "fresh")
	fresh.Env = []string{"HAKUBE_TOKEN=" + secret}

	// A copy with its metadata, one byte changed: the hash check refuses it.
	damaged := snapshot.Dir(t.TempDir())
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0xff
	if _, err := damaged.Save(snap, strings.NewReader(string(data)), false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(string(damaged), snap.Name), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := fresh.RunToExit("--cluster-reset", "--cluster-reset-restore-path", filepath.Join(string(damaged), snap.Name)); code == 0 || !strings.Contains(out, "damaged") {
		t.Fatalf("a damaged snapshot was not refused: exit %d\n%s", code, out)
	}
	// The file alone, as copied to a new machine.
	copied := filepath.Join(t.TempDir(), snap.Name)
	if err := os.WriteFile(copied, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := fresh.RunToExit("--cluster-reset", "--cluster-reset-restore-path", copied, "--token", "not-the-secret"); code == 0 || !strings.Contains(out, "another token") {
		t.Fatalf("a restore with the wrong token was not refused: exit %d\n%s", code, out)
	}
	if left, _ := filepath.Glob(filepath.Join(fresh.DataDir, "server", "db", "*")); len(left) != 0 {
		t.Fatalf("refused restores left %v behind", left)
	}

	began := time.Now()
	fresh.Start("--cluster-reset", "--cluster-reset-restore-path", copied)
	fig.record(t, kind+"_restore_"+strconv.Itoa(n)+"_objects_ready", time.Since(began))
	for prefix, want := range map[string]int{"kept": n, "after-snapshot": 0} {
		if got := countConfigMaps(t, fresh, prefix); got != want {
			t.Fatalf("the restored server lists %d %s configmaps, want %d", got, prefix, want)
		}
	}
	if _, err := fresh.Kubectl("create", "configmap", "after-restore"); err != nil {
		t.Fatalf("write after the restore: %v", err)
	}
}
