package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/test/harness"
)

// TestEtcdNoSpaceRecovery fills an etcd datastore with a small quota (set with
// --etcd-arg, etcd's own compaction off) with the history of one large object
// until etcd raises its NOSPACE alarm and refuses writes. The server compacts,
// defragments and disarms the alarm by itself and writes are accepted again.
// A control-plane component that failed for lack of space meanwhile makes the
// server restart in place (same process), never end. Its metrics are served on
// loopback.
func TestEtcdNoSpaceRecovery(t *testing.T) {
	const quota = 24 << 20
	s := harness.NewServer(t, "server")
	s.Args = append(s.Args, "--node-name=server")
	s.Start("--cluster-init", fmt.Sprintf("--etcd-arg=quota-backend-bytes=%d", quota), "--etcd-arg", "auto-compaction-retention=0")
	ctx := context.Background()
	cms := s.Client().CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "big"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refused, unavailable, updates := 0, 0, 0
	var lastErr error
	began := time.Now()
	for refused == 0 || updates < 3*quota/(900<<10) {
		if time.Since(began) > 3*time.Minute {
			t.Fatalf("after %s: %d updates of 900 KiB, %d refused for space, %d while unavailable (last error: %v); the server's upkeep said:\n%s",
				time.Since(began).Round(time.Second), updates, refused, unavailable, lastErr, grepLog(s, "hygiene.go", "restarting", "hakube is ready"))
		}
		if !s.Running() {
			t.Fatalf("the server ended:\n%s", s.LogTail(30))
		}
		cm.Data = map[string]string{"v": strings.Repeat(fmt.Sprint(updates%10), 900<<10)}
		next, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
		switch {
		case err == nil:
			cm, updates = next, updates+1
		case strings.Contains(err.Error(), "database space exceeded"):
			refused++
			time.Sleep(200 * time.Millisecond)
		case apierrors.IsConflict(err):
			// An update applied while its answer was lost in the restart
			// leaves our copy stale: read the current one.
			if cur, gerr := cms.Get(ctx, "big", metav1.GetOptions{}); gerr == nil {
				cm = cur
			}
		default:
			lastErr = err
			// Restarting in place: the API is away for a few seconds.
			unavailable++
			time.Sleep(time.Second)
		}
	}
	t.Logf("%d updates of 900 KiB into a %d MiB quota; %d refused for space and %d while the server restarted, until it recovered",
		updates, quota>>20, refused, unavailable)
	log := s.CurrentLog()
	for _, want := range []string{"NOSPACE alarm", "quota-backend-bytes", "recovered from NOSPACE"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if !s.Running() {
		t.Fatal("the server ended on NOSPACE")
	}

	resp, err := http.Get("http://127.0.0.1:2381/metrics")
	if err != nil {
		t.Fatalf("metrics on loopback: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"etcd_server_has_leader 1", "etcd_mvcc_db_total_size_in_bytes", `hakube_supervisor_requests_total{code="200",endpoint="/"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// grepLog returns the lines of the server's log holding any of words.
func grepLog(s *harness.Server, words ...string) string {
	var out []string
	for _, l := range strings.Split(s.CurrentLog(), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
