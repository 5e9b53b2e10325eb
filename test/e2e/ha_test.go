// Package e2e runs hakube clusters across network namespaces, one per host.
package e2e

import (
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	_ "github.com/mattn/go-sqlite3"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/status"
	"github.com/hakube/hakube/test/harness"
)

const secret = "e2e-cluster-secret"

// figures are recorded, printed and written to a JSON report; never asserted.
type figures = harness.Figures

// cluster is the harness cluster with helpers bound to one (sub)test.
type cluster struct {
	*harness.Cluster
	t *testing.T
	// encrypted: every server runs with --secrets-encryption.
	encrypted bool
}

func (c *cluster) in(t *testing.T) *cluster {
	return &cluster{Cluster: c.Cluster, t: t, encrypted: c.encrypted}
}

// encrypt makes every server run with --secrets-encryption.
func (c *cluster) encrypt() {
	c.encrypted = true
	for _, s := range c.Servers {
		s.Args = append(s.Args, "--secrets-encryption")
	}
}

// checkEncryption writes the canary Secret through server 1; every server
// reports it encrypted with the cluster's one key, and an uncompressed
// snapshot of server 2 holds it only as ciphertext.
func (c *cluster) checkEncryption(kind string) {
	t := c.t
	t.Helper()
	harness.CreateCanarySecret(t, c.Servers[0])
	// A linearizable read on server 2 first, so its copy holds the write.
	harness.CheckSecretsEncrypted(t, c.Servers[1])
	snap := saveSnapshot(t, c.Servers[1], "encrypted", nil, false)
	st := harness.CheckSecretsEncrypted(t, c.Servers[1], strings.TrimPrefix(snap.Location, "file://"))
	for _, s := range []*harness.Server{c.Servers[0], c.Servers[2]} {
		if other := harness.CheckSecretsEncrypted(t, s); other.Active != st.Active {
			t.Fatalf("%s encrypts with %s, %s with %s", s.Name, other.Active, c.Servers[1].Name, st.Active)
		}
	}
	if out, code := c.Servers[0].Hakube("secrets-encrypt", "status"); code == 0 {
		t.Logf("hakube secrets-encrypt status on %s (%s):\n%s", c.Servers[0].Name, kind, out)
	}
	// Fresh certificates, a year from expiry: check passes on every server.
	for _, s := range c.Servers {
		out, code := s.Hakube("certificate", "check")
		if code != 0 {
			t.Fatalf("certificate check on %s: exit %d\n%s", s.Name, code, out)
		}
		if s == c.Servers[1] {
			t.Logf("hakube certificate check on %s (%s):\n%s", s.Name, kind, out)
		}
	}
}

func (c *cluster) memberList(s *harness.Server) []datastore.Member { return c.Members(c.t, s) }

func (c *cluster) waitVoters(s *harness.Server, n int) []datastore.Member {
	return c.WaitVoters(c.t, s, n)
}

func (c *cluster) leader(s *harness.Server) *harness.Server {
	c.waitVoters(s, len(c.Servers))
	return c.Leader(c.t, s)
}

func (c *cluster) checkHashesEqual() { c.CheckHashesEqual(c.t) }

func createConfigMaps(t *testing.T, s *harness.Server, prefix string, n int) {
	t.Helper()
	cs := s.Client()
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s through %s: %v", cm.Name, s.Name, err)
		}
	}
}

// countConfigMaps counts configmaps with prefix via the real kubectl on s's host.
func countConfigMaps(t *testing.T, s *harness.Server, prefix string) int {
	t.Helper()
	out, err := s.Kubectl("get", "configmaps", "-n", "default", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "configmap/"+prefix+"-") {
			n++
		}
	}
	return n
}

func TestHACluster(t *testing.T) {
	nw := harness.NewNetwork(t, 5)
	c := &cluster{Cluster: harness.NewEtcdCluster(t, nw, 3, secret), t: t}
	c.encrypt()
	// Raft log compacted early, as on a cluster that ran for a while: a
	// later join catches up from the leader's snapshot, which swallows the
	// learner's publish (etcd.Ready restarts it).
	for _, s := range c.Servers {
		s.Args = append(s.Args, "--etcd-arg", "snapshot-count=1000", "--etcd-arg", "snapshot-catchup-entries=100")
	}
	fig := figures{}
	defer fig.Write(t, "e2e-ha-figures.json")
	s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]

	// Form: server 1 with --cluster-init, then servers 2 and 3 join at the same
	// time (etcd allows one learner, so one of them waits its turn).
	formInParallel(t, c, fig, "", []string{"added as learner", "promoted to voter"})
	checkStatus(t, c, s2, "etcd", nil)
	checkSnapshots(t, s2, "etcd")
	c.checkEncryption("etcd")
	rotateKeys(t, c, fig, "etcd", 1000, false)
	waited := strings.Contains(s2.CurrentLog()+s3.CurrentLog(), "another server is joining")
	t.Logf("a parallel joiner waited for the other's promotion: %v", waited)

	// 200 objects through server 1, all read through servers 2 and 3 with kubectl.
	createConfigMaps(t, s1, "bulk", 200)
	for _, s := range []*harness.Server{s2, s3} {
		if n := countConfigMaps(t, s, "bulk"); n != 200 {
			t.Fatalf("%s sees %d of 200 configmaps", s.Name, n)
		}
	}

	for _, sc := range []struct {
		name string
		run  func(*testing.T, *cluster, figures)
	}{
		{"leader killed, writes go on", leaderFailover},
		{"wrong token and rogue server are refused", refusedJoins},
		{"token rotated", tokenRotation},
		{"removed member rejoins", removeAndRejoin("etcd", 200)},
		{"cold restart in reverse order", coldRestart},
		{"quorum lost: reset, rejoin, restore on a fresh machine", quorumLoss("etcd", 4, true)},
	} {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, c.in(t), fig) }) {
			break
		}
	}
}

// checkStatus runs 'hakube cluster status' on s, in JSON and as a table: all
// three members healthy with one leader, or down (if given) unhealthy and the
// cluster degraded, with a non-zero exit.
func checkStatus(t *testing.T, c *cluster, s *harness.Server, kind string, down *harness.Server) {
	t.Helper()
	out, code := s.Hakube("cluster", "status", "-o", "json")
	var st status.Status
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):strings.LastIndex(out, "}")+1]), &st); err != nil {
		t.Fatalf("cluster status -o json: %v\n%s", err, out)
	}
	leaders := 0
	for _, m := range st.Members {
		if m.Role == "leader" {
			leaders++
		}
		isDown := down != nil && c.ServerOf(m.Name) == down
		if m.Healthy == isDown || (m.Healthy && (m.DBSize == 0 || m.RaftIndex == 0)) {
			t.Fatalf("cluster status on %s: member %+v (down: %v)\n%s", s.Name, m, isDown, out)
		}
	}
	wantCode, wantLose, summary := 0, 1, "healthy: 3 voters, can lose 1 server"
	if down != nil {
		wantCode, wantLose, summary = 1, 0, "degraded: "
	}
	if (code == 0) != (wantCode == 0) || st.Datastore != kind || len(st.Members) != 3 || leaders != 1 || st.CanLose != wantLose ||
		!strings.HasPrefix(st.Summary, summary) || st.Healthy != (down == nil) {
		t.Fatalf("cluster status -o json on %s: exit %d\n%s", s.Name, code, out)
	}
	// Scheduled snapshots may come and go meanwhile: the one named must be
	// in the directory, and there must be one if the directory holds any.
	snaps, _ := snapshot.Dir(filepath.Join(s.DataDir, "server", "db", "snapshots")).List()
	if last := st.LastSnapshot; (last == nil) != (len(snaps) == 0) ||
		(last != nil && !slices.ContainsFunc(snaps, func(m snapshot.Meta) bool { return m.Name == last.Name })) {
		t.Fatalf("cluster status on %s: last snapshot %+v, the directory holds %d\n%s", s.Name, last, len(snaps), out)
	}
	table, code := s.Hakube("cluster", "status")
	if (code == 0) != (wantCode == 0) || !strings.Contains(table, "status:        "+summary) || !strings.Contains(table, "last snapshot: ") || !regexp.MustCompile(`NAME +ROLE +HEALTHY +RAFT INDEX +LAG +DB SIZE +FRAGMENTED`).MatchString(table) {
		t.Fatalf("cluster status on %s: exit %d\n%s", s.Name, code, table)
	}
	t.Logf("hakube cluster status on %s:\n%s", s.Name, table)
}

// checkSnapshots saves two snapshots on s (one compressed), lists them,
// checks that each file is what its metadata says and holds the datastore's
// data (an etcd bbolt file; a SQLite database with the key/value rows), then
// prunes and deletes them.
func checkSnapshots(t *testing.T, s *harness.Server, kind string) {
	t.Helper()
	for _, args := range [][]string{{"--name", "first"}, {"--name", "second", "--compress"}} {
		if out, code := s.Hakube(append([]string{"etcd-snapshot", "save"}, args...)...); code != 0 || !strings.Contains(out, "saved snapshot") {
			t.Fatalf("etcd-snapshot save %v on %s: exit %d\n%s", args, s.Name, code, out)
		}
	}
	out, code := s.Hakube("etcd-snapshot", "ls", "-o", "json")
	var list []snapshot.Meta
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "["):]), &list) != nil || len(list) != 2 {
		t.Fatalf("etcd-snapshot ls on %s: exit %d\n%s", s.Name, code, out)
	}
	dir := snapshot.Dir(filepath.Join(s.DataDir, "server", "db", "snapshots"))
	for _, m := range list {
		if err := dir.Verify(m.Name); err != nil || m.Datastore != kind || m.Node == "" || m.Size == 0 {
			t.Fatalf("snapshot %+v: %v", m, err)
		}
		f, err := os.Open(filepath.Join(string(dir), m.Name))
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = f
		if m.Compressed {
			if r, err = gzip.NewReader(f); err != nil {
				t.Fatal(err)
			}
		}
		tmp := filepath.Join(t.TempDir(), "snapshot.db")
		w, _ := os.Create(tmp)
		_, err = io.Copy(w, r)
		w.Close()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		checkSnapshotData(t, tmp, kind)
	}
	table, _ := s.Hakube("etcd-snapshot", "ls")
	t.Logf("hakube etcd-snapshot ls on %s:\n%s", s.Name, table)
	if out, code := s.Hakube("etcd-snapshot", "prune", "--snapshot-retention", "1"); code != 0 || !strings.Contains(out, "pruned 1 snapshots: "+list[0].Name) {
		t.Fatalf("prune: exit %d\n%s", code, out)
	}
	if out, code := s.Hakube("etcd-snapshot", "delete", list[1].Name, "no-such-snapshot"); code == 0 || !strings.Contains(out, "no snapshot called no-such-snapshot") {
		t.Fatalf("delete with a missing name: exit %d\n%s", code, out)
	}
	if left, _ := dir.List(); len(left) != 0 {
		t.Fatalf("snapshots left after prune and delete: %+v", left)
	}
}

// checkSnapshotData opens a snapshot file as the datastore would.
func checkSnapshotData(t *testing.T, path, kind string) {
	t.Helper()
	if kind == "etcd" {
		b := make([]byte, 20)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// A bbolt file's first page is a meta page: its magic follows a 16-byte header.
		if _, err := io.ReadFull(f, b); err != nil || binary.LittleEndian.Uint32(b[16:]) != 0xED0CDAED {
			t.Fatalf("etcd snapshot %s is not a bbolt database (%v)", path, err)
		}
		return
	}
	db, err := sql.Open("sqlite3", path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kv WHERE key LIKE '/registry/configmaps/%'`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("Dqlite snapshot %s: %d configmap rows (%v)", path, n, err)
	}
}

// formInParallel starts server 1 with --cluster-init and initArgs, then the
// others joining it at the same time, and records how long each part took
// (figures named with prefix). Each joiner's log must hold the common
// progress lines and the datastore's own, and never the token secret.
func formInParallel(t *testing.T, c *cluster, fig figures, prefix string, progress []string, initArgs ...string) {
	t.Helper()
	s1, joiners := c.Servers[0], c.Servers[1:]
	began := time.Now()
	s1.Start(append([]string{"--cluster-init"}, initArgs...)...)
	fig.Record(t, prefix+"first_server_ready", time.Since(began))
	joinBegan := time.Now()
	for _, s := range joiners {
		if err := s.StartAsync("--server", s1.URL()); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range joiners {
		if err := s.WaitReady(4 * time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	fig.Record(t, prefix+"two_parallel_joins_to_voter", time.Since(joinBegan))
	c.waitVoters(s1, len(c.Servers))
	fig.Record(t, prefix+"form_three_server_cluster", time.Since(began))
	want := append([]string{"CA of", "bootstrap data fetched", "hakube is ready"}, progress...)
	for _, s := range joiners {
		log := s.CurrentLog()
		for _, w := range want {
			if !strings.Contains(log, w) {
				t.Errorf("%s's log lacks the progress line %q", s.Name, w)
			}
		}
		if strings.Contains(log, secret) {
			t.Errorf("%s logged the token secret", s.Name)
		}
	}
	// Every server's supervisor is an endpoint of the kubernetes Service.
	harness.CheckKubernetesService(t, c.Servers[0].Client(), c.Servers[0].Port, len(c.Servers))
}

func leaderFailover(t *testing.T, c *cluster, fig figures) {
	victim := c.leader(c.Servers[0])
	var others []*harness.Server
	for _, s := range c.Servers {
		if s != victim {
			others = append(others, s)
		}
	}
	t.Logf("etcd leader is on %s; killing it", victim.Name)
	fig.Record(t, "failover_leader_kill_to_write", killAndWrite(t, victim, others[0], "failover-probe"))
	checkStatus(t, c, others[0], "etcd", victim)
	createConfigMaps(t, others[0], "during-outage-a", 25)
	createConfigMaps(t, others[1], "during-outage-b", 25)

	began := time.Now()
	victim.Start()
	fig.Record(t, "killed_server_restart_ready", time.Since(began))
	for prefix, want := range map[string]int{"bulk": 200, "during-outage-a": 25, "during-outage-b": 25} {
		if n := countConfigMaps(t, victim, prefix); n != want {
			t.Fatalf("restarted %s sees %d of %d %s configmaps", victim.Name, n, want, prefix)
		}
	}
	c.waitVoters(c.Servers[0], 3)
	c.checkHashesEqual()
}

// killAndWrite SIGKILLs victim and returns how long until a write through
// other is acknowledged (configmaps prefix-N, each try bounded at 5 s).
func killAndWrite(t *testing.T, victim, other *harness.Server, prefix string) time.Duration {
	t.Helper()
	killed := time.Now()
	victim.Kill()
	cs := other.Client()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}}
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		cancel()
		if err == nil {
			return time.Since(killed)
		}
		if time.Since(killed) > 2*time.Minute {
			t.Fatalf("no write acknowledged through %s within 2 minutes of killing %s: %v", other.Name, victim.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func refusedJoins(t *testing.T, c *cluster, _ figures) {
	h4, h5 := c.Net.Hosts[3], c.Net.Hosts[4]
	before := len(c.memberList(c.Servers[0]))
	s1 := c.Servers[0]
	h4.CheckRoute(t, s1.Host)

	wrong := h4.Server(t, "wrong")
	out, code := wrong.RunToExit("--server", s1.URL(), "--token", "not-the-secret")
	if code == 0 || !strings.Contains(out, "could not prove it knows the token") {
		t.Fatalf("join with a wrong short token: exit %d\n%s", code, out)
	}
	fullToken, err := os.ReadFile(filepath.Join(s1.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	withWrongSecret := strings.TrimSpace(string(fullToken))
	withWrongSecret = withWrongSecret[:strings.LastIndex(withWrongSecret, ":")+1] + "not-the-secret"
	out, code = wrong.RunToExit("--server", s1.URL(), "--token", withWrongSecret)
	if code == 0 || !strings.Contains(out, "refused the token") {
		t.Fatalf("join with the right CA hash but a wrong secret: exit %d\n%s", code, out)
	}

	// A rogue server with its own CA on host 4; a joiner on host 5 holding the
	// real cluster's token must refuse it, with a full or a short token.
	rogue := h4.Server(t, "rogue")
	rogue.Start("--cluster-init", "--token", "rogue-secret")
	h5.CheckRoute(t, rogue.Host)
	victim := h5.Server(t, "victim")
	out, code = victim.RunToExit("--server", rogue.URL(), "--token", strings.TrimSpace(string(fullToken)))
	if code == 0 || !strings.Contains(out, "CA check failed") || !strings.Contains(out, "token pins") {
		t.Fatalf("join to a rogue server with a pinned token: exit %d\n%s", code, out)
	}
	out, code = victim.RunToExit("--server", rogue.URL(), "--token", secret)
	if code == 0 || !strings.Contains(out, "could not prove it knows the token") {
		t.Fatalf("join to a rogue server with a short token: exit %d\n%s", code, out)
	}
	if strings.Contains(rogue.CurrentLog(), secret) {
		t.Fatal("the real token's secret reached the rogue server")
	}
	if n := len(c.memberList(rogue)); n != 1 {
		t.Fatalf("rogue cluster has %d members after refused joins", n)
	}
	rogue.Stop()
	if after := len(c.memberList(s1)); after != before {
		t.Fatalf("refused joins changed the member count from %d to %d", before, after)
	}
}

// removeAndRejoin removes server 3 from a cluster on kind holding bulk
// "bulk" configmaps (refused first while server 2 is down), and brings it back
// with --server.
func removeAndRejoin(kind string, bulk int) func(*testing.T, *cluster, figures) {
	return func(t *testing.T, c *cluster, fig figures) {
		s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]
		var name string
		for _, m := range c.memberList(s1) {
			if c.ServerOf(m.Name) == s3 {
				name = m.Name
			}
		}
		// With s2 down, removing s3 would leave one healthy voter of two: refused.
		s2.Stop()
		out, code := s1.Hakube("etcd", "member", "remove", name)
		if code == 0 || !strings.Contains(out, "quorum") {
			t.Fatalf("removal that loses quorum was not refused: exit %d\n%s", code, out)
		}
		s2.Start()
		c.waitVoters(s1, 3)

		out, code = s1.Hakube("etcd", "member", "remove", name)
		if code != 0 {
			t.Fatalf("member remove: exit %d\n%s", code, out)
		}
		// The removed server notices and stops with a message that says what to do.
		code, err := s3.WaitExit(time.Minute)
		if err != nil {
			t.Error("the removed server kept running")
			s3.Stop()
		} else if code == 0 || !strings.Contains(s3.CurrentLog(), "was removed from the") || !strings.Contains(s3.CurrentLog(), "--server") {
			t.Errorf("removed server exited (%d) without saying it was removed:\n%s", code, s3.LogTail(10))
		}
		if kind == "etcd" {
			// Two voters now: a restarting server warns that they tolerate no failure.
			s2.Stop()
			s2.Start()
			if !strings.Contains(s2.CurrentLog(), "2 servers, which tolerate 0 failures") {
				t.Error("a server of a two-server cluster did not warn about the even server count")
			}
		}

		began := time.Now()
		s3.Start("--server", s1.URL())
		fig.Record(t, strings.TrimPrefix(kind+"_", "etcd_")+"removed_member_rejoin_ready", time.Since(began))
		if !strings.Contains(s3.CurrentLog(), "old data is kept in") {
			t.Error("rejoining server did not say where it kept its old data")
		}
		backups, _ := filepath.Glob(filepath.Join(s3.DataDir, "server", "db", kind+"-removed-*"))
		if len(backups) != 1 {
			t.Fatalf("old %s data was not kept aside: %v", kind, backups)
		}
		c.waitVoters(s1, 3)
		if n := countConfigMaps(t, s3, "bulk"); n != bulk {
			t.Fatalf("rejoined server sees %d of %d configmaps", n, bulk)
		}
	}
}

func coldRestart(t *testing.T, c *cluster, fig figures) {
	for _, s := range c.Servers {
		if code := s.Stop(); code != 0 {
			t.Fatalf("%s exit code %d on SIGTERM", s.Name, code)
		}
	}
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Servers))
	for i := len(c.Servers) - 1; i >= 0; i-- {
		s := c.Servers[i]
		extra := []string{"--server", c.Servers[0].URL()}
		if i == 0 {
			extra = []string{"--cluster-init"}
		}
		if err := s.StartAsync(extra...); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.WaitReady(5 * time.Minute)
		}()
		time.Sleep(2 * time.Second)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	fig.Record(t, "cold_restart_reverse_order", time.Since(began))
	c.waitVoters(c.Servers[0], 3)
	for _, s := range c.Servers {
		if n := countConfigMaps(t, s, "bulk"); n != 200 {
			t.Fatalf("%s sees %d of 200 configmaps after the cold restart", s.Name, n)
		}
	}
	c.checkHashesEqual()
}
