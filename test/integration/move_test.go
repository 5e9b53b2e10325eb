package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/test/harness"
)

// TestDatastoreMoves moves one server's data SQLite → Dqlite → etcd → SQLite
// with --datastore, checking every object after each move and the backup of
// the datastore it left; then an interrupted move (data of two kinds) is
// refused without --datastore and finished with it.
func TestDatastoreMoves(t *testing.T) {
	s := harness.NewServer(t, "server")
	s.Args = append(s.Args, "--node-name=server")
	s.Start()
	ctx := context.Background()
	cs := s.Client()
	want := map[string]string{}
	for i := range 60 {
		name := fmt.Sprintf("move-%d", i)
		want["cm/"+name] = fmt.Sprint(i)
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name},
			Data: map[string]string{"v": fmt.Sprint(i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			want["secret/"+name] = "p" + fmt.Sprint(i)
			if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
				StringData: map[string]string{"v": "p" + fmt.Sprint(i)}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dbDir := filepath.Join(s.DataDir, "server", "db")
	check := func(step string) {
		t.Helper()
		cs := s.Client()
		cms, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secs, err := cs.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range cms.Items {
			if strings.HasPrefix(c.Name, "move-") {
				got["cm/"+c.Name] = c.Data["v"]
			}
		}
		for _, c := range secs.Items {
			if strings.HasPrefix(c.Name, "move-") {
				got["secret/"+c.Name] = string(c.Data["v"])
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: objects differ:\nwant %v\ngot  %v", step, want, got)
		}
	}
	for _, m := range []struct {
		from, backup string
		args         []string
	}{
		{"sqlite", "state.db.migrated-*", []string{"--cluster-init", "--datastore=dqlite"}},
		{"dqlite", "dqlite.migrated-*", []string{"--cluster-init", "--datastore=etcd"}},
		{"etcd", "etcd.migrated-*", []string{"--datastore=sqlite"}},
	} {
		s.Stop()
		s.Start(m.args...)
		step := "from " + m.from + " with " + strings.Join(m.args, " ")
		if !strings.Contains(s.CurrentLog(), "migrate: copied") {
			t.Fatalf("%s: no copy reported", step)
		}
		if b, _ := filepath.Glob(filepath.Join(dbDir, m.backup)); len(b) != 1 {
			t.Fatalf("%s: backups %v", step, b)
		}
		check(step)
	}

	// Data of two kinds, as after a crash in the middle of a move: the
	// server does not guess which one is current.
	s.Stop()
	b, _ := filepath.Glob(filepath.Join(dbDir, "etcd.migrated-*"))
	if err := os.Rename(b[0], filepath.Join(dbDir, "etcd")); err != nil {
		t.Fatal(err)
	}
	out, code := harness.RunHakube(t, nil, s.CommandArgs()...)
	if code == 0 || !strings.Contains(out, "data of sqlite and etcd: a move between datastores was interrupted") {
		t.Fatalf("start with data of two kinds: exit %d\n%s", code, out)
	}
	s.Start("--datastore=sqlite")
	check("finishing an interrupted move to sqlite")
}
