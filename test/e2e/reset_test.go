package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/test/harness"
)

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

// quorumLoss kills two of three servers of a formed cluster, resets the
// survivor with --cluster-reset, rejoins the others with --server, and
// restores a snapshot taken before the loss on a fresh machine (Hosts[fresh])
// with only the snapshot and the token: a copied file, or, viaS3, a name in
// an S3 store (versitygw on the fresh host) the snapshot was uploaded to.
func quorumLoss(kind string, fresh int, viaS3 bool) func(*testing.T, *cluster, figures) {
	return func(t *testing.T, c *cluster, fig figures) {
		s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]
		n := restoreObjects(t)
		began := time.Now()
		createConfigMaps(t, s1, "kept", n)
		fig.Record(t, kind+"_create_"+strconv.Itoa(n)+"_objects", time.Since(began))
		var store *harness.S3
		if viaS3 {
			h := c.Net.Hosts[fresh]
			store = harness.StartS3(t, h.Wrap(), h.IP, 9000)
		}
		snap := saveSnapshot(t, s1, "before-loss", store, true)
		createConfigMaps(t, s2, "after-snapshot", 20)
		// Someone deletes the wrong thing: gone after the reset, back after the restore.
		const deleted = 10
		for i := range deleted {
			if _, err := s2.Kubectl("delete", "configmap", fmt.Sprintf("kept-%d", i)); err != nil {
				t.Fatal(err)
			}
		}

		// Quorum loss: two servers die; the survivor is stopped by its operator.
		s2.Kill()
		s3.Kill()
		if code := s1.Stop(); code != 0 {
			t.Fatalf("the survivor exited %d on SIGTERM", code)
		}

		began = time.Now()
		s1.Start("--cluster-reset")
		fig.Record(t, kind+"_cluster_reset_ready", time.Since(began))
		log := s1.CurrentLog()
		for _, want := range []string{"cluster reset done", "only member", "--server " + s1.URL()} {
			if !strings.Contains(log, want) {
				t.Errorf("the reset server's log lacks %q", want)
			}
		}
		for prefix, want := range map[string]int{"kept": n - deleted, "after-snapshot": 20} {
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
			if backups, _ := filepath.Glob(filepath.Join(s.DataDir, "server", "db", kind+"-removed-*")); len(backups) == 0 {
				t.Errorf("%s did not keep its old %s data aside", s.Name, kind)
			}
		}
		c.waitVoters(s1, 3)
		fig.Record(t, kind+"_others_rejoined_after_reset", time.Since(began))
		for prefix, want := range map[string]int{"kept": n - deleted, "after-snapshot": 20, "after-reset": 10} {
			if got := countConfigMaps(t, s3, prefix); got != want {
				t.Fatalf("rejoined %s lists %d of %d %s configmaps", s3.Name, got, want, prefix)
			}
		}
		c.CheckSameConfigMaps(t, "default")
		checkStatus(t, c, s1, kind, nil) // s1 holds the snapshot: the status names it

		restoreOnFreshMachine(t, c, c.Net.Hosts[fresh], snap, kind, n, fig, store)
	}
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
	// The first certificate to expire is a leaf, a year from its issue.
	if !regexp.MustCompile(`(?m)^hakube_certificate_nearest_expiry_seconds 3\.1[0-9]*e\+07$`).Match(body) {
		t.Errorf("server 1's metrics lack the nearest certificate expiry (about 3.15e+07 s)")
	}
	if _, err := hc.Get("http://" + c.Net.Hosts[1].IP + ":2381/metrics"); err == nil {
		t.Error("server 2's metrics are reachable on its node IP without --etcd-expose-metrics")
	}
}

// saveSnapshot saves a compressed snapshot on s, and uploads it to store if
// given; it returns the local snapshot, after checking that ls lists the
// copy in the store with the same hash.
func saveSnapshot(t *testing.T, s *harness.Server, name string, store *harness.S3, compress bool) snapshot.Meta {
	t.Helper()
	var s3 []string
	if store != nil {
		s3 = store.Flags()
	}
	args := []string{"etcd-snapshot", "save", "--name", name}
	if compress {
		args = append(args, "--compress")
	}
	if out, code := s.Hakube(append(args, s3...)...); code != 0 {
		t.Fatalf("etcd-snapshot save on %s: exit %d\n%s", s.Name, code, out)
	}
	out, code := s.Hakube(append([]string{"etcd-snapshot", "ls", "-o", "json"}, s3...)...)
	var list []snapshot.Meta
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "["):]), &list) != nil {
		t.Fatalf("etcd-snapshot ls on %s: exit %d\n%s", s.Name, code, out)
	}
	var local, remote []snapshot.Meta
	for _, m := range list {
		if !strings.HasPrefix(m.Name, name+"-") {
			continue
		}
		if strings.HasPrefix(m.Location, "s3://") {
			remote = append(remote, m)
		} else {
			local = append(local, m)
		}
	}
	if len(local) != 1 || (store != nil && (len(remote) != 1 || remote[0].SHA256 != local[0].SHA256)) {
		t.Fatalf("snapshot %s: want one local copy and, with S3, one remote of the same hash; ls says:\n%s", name, out)
	}
	return local[0]
}

// restoreOnFreshMachine restores the snapshot on a host that never ran
// hakube, given only the snapshot (a copied file, or its name in store) and
// the token: a damaged copy and a wrong token are refused first, leaving
// nothing behind.
func restoreOnFreshMachine(t *testing.T, c *cluster, h *harness.Host, snap snapshot.Meta, kind string, n int, fig figures, store *harness.S3) {
	t.Helper()
	file := strings.TrimPrefix(snap.Location, "file://")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fresh := h.Server(t, "fresh")
	fresh.Env = []string{"HAKUBE_TOKEN=" + secret}
	if c.encrypted {
		fresh.Args = append(fresh.Args, "--secrets-encryption")
	}

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

	source := []string{"--cluster-reset-restore-path", copied}
	if store != nil {
		// By name, from the S3 store: downloaded with its metadata, hash-checked.
		source = append([]string{"--cluster-reset-restore-path", snap.Name}, store.Flags()...)
	}
	began := time.Now()
	fresh.Start(append([]string{"--cluster-reset"}, source...)...)
	if store != nil && !strings.Contains(fresh.CurrentLog(), "downloading snapshot "+snap.Name) {
		t.Error("the fresh server did not say it downloaded the snapshot from S3")
	}
	fig.Record(t, kind+"_restore_"+strconv.Itoa(n)+"_objects_ready", time.Since(began))
	// The snapshot's state: the objects deleted after it are back, those
	// created after it are not there.
	for prefix, want := range map[string]int{"kept": n, "after-snapshot": 0} {
		if got := countConfigMaps(t, fresh, prefix); got != want {
			t.Fatalf("the restored server lists %d %s configmaps, want %d", got, prefix, want)
		}
	}
	if c.encrypted {
		// The keys came back with the bootstrap data: the Secret reads.
		out, err := fresh.Kubectl("get", "secret", "enc-canary", "-o", "jsonpath={.data.value}")
		if want := base64.StdEncoding.EncodeToString([]byte(harness.CanaryValue)); err != nil || strings.TrimSpace(out) != want {
			t.Fatalf("the restored server reads the canary Secret as %q (%v), want %q", out, err, want)
		}
		harness.CheckSecretsEncrypted(t, fresh)
	}
	// Resource versions go on past any the old cluster handed out.
	out, err := fresh.Kubectl("create", "configmap", "after-restore", "-o", "jsonpath={.metadata.resourceVersion}")
	if err != nil {
		t.Fatalf("write after the restore: %v", err)
	}
	if rv, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64); err != nil || rv <= datastore.RestoreRevisionBump {
		t.Fatalf("the first write after the restore has resource version %q, want one past %d", out, int64(datastore.RestoreRevisionBump))
	}
}
