package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/test/harness"
)

// TestSQLiteToEtcdMigration: a single server on SQLite with 500 objects,
// restarted with --cluster-init, serves the same objects from etcd, keeps the
// SQLite file as a backup, and a second server can then join it.
func TestSQLiteToEtcdMigration(t *testing.T) {
	nw := harness.NewNetwork(t, 2)
	fig := figures{}
	defer fig.Write(t, "e2e-migration-figures.json")
	s1 := nw.Hosts[0].Server(t, "m1")
	s1.Env = []string{"HAKUBE_TOKEN=" + secret}
	s1.Start()
	createConfigMaps(t, s1, "mig", 480)
	cs := s1.Client()
	ctx := context.Background()
	for i := range 20 {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("mig-secret-%d", i)}, StringData: map[string]string{"v": fmt.Sprint(i)}}
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A SQLite server cannot be joined; the joiner says what to do instead.
	s2 := nw.Hosts[1].Server(t, "m2")
	s2.Env = s1.Env
	out, code := s2.RunToExit("--server", s1.URL())
	if code == 0 || !strings.Contains(out, "single-server SQLite datastore") || !strings.Contains(out, "--cluster-init") {
		t.Fatalf("joining a SQLite server: exit %d\n%s", code, out)
	}
	if code := s1.Stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	began := time.Now()
	s1.Start("--cluster-init")
	fig.Record(t, "migrate_500_objects_to_ready", time.Since(began))
	if n := countConfigMaps(t, s1, "mig"); n != 480 {
		t.Fatalf("%d of 480 configmaps after migration", n)
	}
	cs = s1.Client()
	for i := range 20 {
		sec, err := cs.CoreV1().Secrets("default").Get(ctx, fmt.Sprintf("mig-secret-%d", i), metav1.GetOptions{})
		if err != nil || string(sec.Data["v"]) != fmt.Sprint(i) {
			t.Fatalf("secret %d after migration: %v", i, err)
		}
	}
	backups, _ := filepath.Glob(filepath.Join(s1.DataDir, "server", "db", "state.db.migrated-*"))
	if len(backups) == 0 {
		t.Fatal("the SQLite database was not kept as a backup")
	}
	if matches, _ := filepath.Glob(filepath.Join(s1.DataDir, "server", "db", "state.db")); len(matches) != 0 {
		t.Fatal("state.db still in place after the migration")
	}

	// The migrated cluster is an etcd cluster others can join.
	s2.Start("--server", s1.URL())
	if n := countConfigMaps(t, s2, "mig"); n != 480 {
		t.Fatalf("joined server sees %d of 480 configmaps", n)
	}
	// Two servers tolerate no failure, and the joiner says so.
	if !strings.Contains(s2.CurrentLog(), "2 servers, which tolerate 0 failures") {
		t.Error("joining as the second server did not warn about the even server count")
	}

	// A restart of the migrated server keeps serving from etcd, not SQLite again.
	s1.Stop()
	s1.Start()
	if n := countConfigMaps(t, s1, "mig"); n != 480 {
		t.Fatalf("%d of 480 configmaps after restarting the migrated server", n)
	}
}
