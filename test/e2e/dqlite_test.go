package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/test/harness"
)

// TestDqliteHACluster forms a three-server cluster on the Dqlite datastore
// with the same join flow as etcd, loses its leader, rotates its token and
// its CAs, removes a member that
// then rejoins, refuses a wrong token, restarts cold, loses its quorum and is
// reset; every server serves the same objects at the same resource versions
// throughout, and a snapshot is restored on a fresh machine.
func TestDqliteHACluster(t *testing.T) {
	nw := harness.NewNetwork(t, 4)
	c := &cluster{Cluster: harness.NewEtcdCluster(t, nw, 3, secret), t: t}
	c.encrypt()
	fig := figures{}
	defer fig.Write(t, "e2e-dqlite-figures.json")
	s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]

	// Server 1 snapshots every 5 s and keeps 2, through every restart below.
	s1.Args = append(s1.Args, "--etcd-snapshot-schedule-cron=@every 5s", "--etcd-snapshot-retention=2")
	formInParallel(t, c, fig, "dqlite_", []string{"the cluster runs on Dqlite"}, "--datastore=dqlite", "--etcd-expose-metrics")
	checkExposedMetrics(t, c)
	checkStatus(t, c, s3, "dqlite", nil)
	checkSnapshots(t, s3, "dqlite")
	c.checkEncryption("dqlite")
	rotateKeys(t, c, fig, "dqlite", 1000, true)

	createConfigMaps(t, s1, "bulk", 100)
	for _, s := range []*harness.Server{s2, s3} {
		if n := countConfigMaps(t, s, "bulk"); n != 100 {
			t.Fatalf("%s sees %d of 100 configmaps", s.Name, n)
		}
	}
	c.CheckSameConfigMaps(t, "default")

	// Leader killed: a write through another server is acknowledged, and the
	// restarted server catches up.
	victim := c.leader(s1)
	var others []*harness.Server
	for _, s := range c.Servers {
		if s != victim {
			others = append(others, s)
		}
	}
	t.Logf("Dqlite leader is on %s; killing it", victim.Name)
	killed := time.Now()
	victim.Kill()
	for i := 0; ; i++ {
		if _, err := others[0].Kubectl("create", "configmap", fmt.Sprintf("failover-probe-%d", i)); err == nil {
			break
		}
		if time.Since(killed) > 2*time.Minute {
			t.Fatal("no write acknowledged within 2 minutes of killing the leader")
		}
		time.Sleep(200 * time.Millisecond)
	}
	fig.Record(t, "dqlite_failover_leader_kill_to_write", time.Since(killed))
	checkStatus(t, c, others[0], "dqlite", victim)
	createConfigMaps(t, others[1], "during-outage", 20)
	victim.Start()
	if n := countConfigMaps(t, victim, "during-outage"); n != 20 {
		t.Fatalf("restarted %s sees %d of 20 configmaps written while it was down", victim.Name, n)
	}
	c.waitVoters(s1, 3)
	c.CheckSameConfigMaps(t, "default")

	// The token and the CAs rotated; then a member removed with 'hakube
	// etcd member remove' stops, and rejoins with --server (its old data
	// moved aside) and the new token.
	tokenRotation(t, c, fig)
	caRotation(t, c, fig)
	removeAndRejoin("dqlite", 100)(t, c, fig)
	c.CheckSameConfigMaps(t, "default")

	// A joiner with the wrong secret is refused and the cluster is unchanged.
	wrong := nw.Hosts[3].Server(t, "wrong")
	out, code := wrong.RunToExit("--server", s1.URL(), "--token", "not-the-secret")
	if code == 0 {
		t.Fatalf("a joiner with the wrong token started:\n%s", out)
	}
	if n := len(c.Members(t, s1)); n != 3 {
		t.Fatalf("%d members after a refused join, want 3", n)
	}

	// Cold restart in reverse order: the cluster serves once a majority is up.
	for _, s := range c.Servers {
		if code := s.Stop(); code != 0 {
			t.Fatalf("%s exit code %d on SIGTERM", s.Name, code)
		}
	}
	began := time.Now()
	c.StartAllReversed(t, 4*time.Minute)
	fig.Record(t, "dqlite_cold_restart_reverse_order", time.Since(began))
	if n := countConfigMaps(t, s1, "bulk"); n != 100 {
		t.Fatalf("after the cold restart %d of 100 configmaps", n)
	}
	c.CheckSameConfigMaps(t, "default")

	// Minutes of snapshots every 5 s: two or three kept (one may be between
	// its save and the prune), each matching its metadata.
	dir := snapshot.Dir(filepath.Join(s1.DataDir, "server", "db", "snapshots"))
	all, _ := dir.List()
	var scheduled []string
	for _, m := range all {
		if strings.HasPrefix(m.Name, "etcd-snapshot-s1-") {
			scheduled = append(scheduled, m.Name)
			if err := dir.Verify(m.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(scheduled) < 2 || len(scheduled) > 3 {
		t.Fatalf("server 1 keeps %d scheduled snapshots with retention 2: %v", len(scheduled), scheduled)
	}

	// Quorum loss, reset, rejoin; a snapshot restored on host 4.
	quorumLoss("dqlite", 3, false)(t, c, fig)
}
