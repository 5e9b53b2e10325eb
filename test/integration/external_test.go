package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/test/harness"
)

// TestExternalPostgres runs a server on a real PostgreSQL through kine, restarts
// it, and checks that the state lived in PostgreSQL and not on local disk.
func TestExternalPostgres(t *testing.T) {
	dsn := harness.StartPostgres(t).DSN
	s := harness.NewServer(t, "server-pg")
	s.Args = []string{"--datastore-endpoint", dsn, "--token", "pg-secret"}
	s.Start()
	ctx := context.Background()
	cs := s.Client()
	for i := range 20 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pg-%d", i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "db", "state.db")); err == nil {
		t.Fatal("a local SQLite database was created although an external datastore was given")
	}
	if code := s.Stop(); code != 0 {
		t.Fatalf("stop exit code %d", code)
	}

	// A second server with a fresh data dir on the same database gets the
	// cluster's CAs from the bootstrap data and sees every object.
	s2 := harness.NewServer(t, "server-pg-2")
	s2.Args = s.Args
	s2.Start()
	cms, err := s2.Client().CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, cm := range cms.Items {
		if strings.HasPrefix(cm.Name, "pg-") {
			found++
		}
	}
	if found != 20 {
		t.Fatalf("found %d of 20 configmaps through the second server", found)
	}
	ca1, _ := os.ReadFile(filepath.Join(s.DataDir, "server", "tls", "server-ca.crt"))
	ca2, _ := os.ReadFile(filepath.Join(s2.DataDir, "server", "tls", "server-ca.crt"))
	if len(ca1) == 0 || string(ca1) != string(ca2) {
		t.Fatal("the second server did not take the cluster CA from the datastore")
	}
	if out, err := s2.Kubectl("get", "configmap", "pg-7", "-o", "jsonpath={.data.i}"); err != nil || out != "7" {
		t.Fatalf("kubectl through second server: %q %v", out, err)
	}
	s2.Stop()

	// A server with another token on the same database is refused.
	s3 := harness.NewServer(t, "server-pg-3")
	out, code := harness.RunHakube(t, nil, s3.CommandArgs("--datastore-endpoint", dsn, "--token", "other-secret")...)
	if code == 0 || !strings.Contains(out, "the datastore was created with a different token") {
		t.Fatalf("other token on the same datastore: exit %d\n%s", code, out)
	}
}

// TestRestartInPlaceAfterDatastoreStall freezes the datastore for longer than
// the controller manager's 10 s lease renew deadline: upstream then ends the
// process; hakube restarts itself in place and serves again once the
// datastore is back, with the same process and all its objects.
func TestRestartInPlaceAfterDatastoreStall(t *testing.T) {
	pg := harness.StartPostgres(t)
	s := harness.NewServer(t, "server-stall")
	s.Args = []string{"--datastore-endpoint", pg.DSN, "--token", "stall-secret"}
	s.Start()
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "before-stall"}}
	if _, err := s.Client().CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Only a server that has been up for a minute restarts in place.
	time.Sleep(65 * time.Second)
	if err := pg.Freeze(); err != nil {
		t.Fatal(err)
	}
	t.Log("datastore frozen")
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(s.CurrentLog(), harness.RestartInPlaceLine) {
		if time.Now().After(deadline) {
			_ = pg.Thaw()
			t.Fatal("no in-place restart within 90 s of the datastore freezing")
		}
		if !s.Running() {
			t.Fatalf("the server exited (code %d) instead of restarting in place", s.ExitCode())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := pg.Thaw(); err != nil {
		t.Fatal(err)
	}
	t.Log("in-place restart began; datastore thawed")
	deadline = time.Now().Add(2 * time.Minute)
	for strings.Count(s.CurrentLog(), "hakube is ready") < 2 {
		if time.Now().After(deadline) || !s.Running() {
			t.Fatalf("the server did not become ready again (running: %v)", s.Running())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := s.Client().CoreV1().ConfigMaps("default").Get(ctx, "before-stall", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the in-place restart: %v", err)
	}
	if out, err := s.Kubectl("create", "configmap", "after-stall"); err != nil {
		t.Fatalf("write after the in-place restart: %v\n%s", err, out)
	}
}
