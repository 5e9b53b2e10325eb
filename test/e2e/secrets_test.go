package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/test/harness"
)

// rotateKeys rotates the cluster's Secrets key with n Secrets stored; the
// rotation runs whole (its time is a figure). With interrupt, a second one
// is interrupted: server 1, which runs it, is killed with SIGKILL once the
// rewrite of the Secrets has begun. While server 1 is down a new run
// elsewhere refuses and names it; once it is back, running the command again
// on it resumes and finishes. Every Secret then reads back unchanged through
// every server, stored under the new key alone.
func rotateKeys(t *testing.T, c *cluster, fig figures, kind string, n int, interrupt bool) {
	t.Helper()
	s1, s2 := c.Servers[0], c.Servers[1]
	want := createSecrets(t, s1, "rot", n)
	before := harness.CheckSecretsEncrypted(t, s1)

	began := time.Now()
	out, code := s1.Hakube("secrets-encrypt", "rotate-keys")
	if code != 0 {
		t.Fatalf("rotate-keys on %s: exit %d\n%s", s1.Name, code, out)
	}
	fig.Record(t, fmt.Sprintf("%s_rotate_keys_%d_secrets", kind, n), time.Since(began))
	t.Logf("hakube secrets-encrypt rotate-keys on %s (%s, %d Secrets):\n%s", s1.Name, kind, n, out)
	first := harness.CheckSecretsEncrypted(t, s2)
	if first.Active == before.Active || len(first.Keys) != 1 {
		t.Fatalf("after rotate-keys the keys are %v, active %s (was %s)", first.Keys, first.Active, before.Active)
	}

	if !interrupt {
		checkSecretsRead(t, c, want, first.Active)
		return
	}

	// Interrupted by a SIGKILL of the server running it, mid-rewrite.
	var buf syncBuffer
	argv := append(append([]string{}, s1.Wrap...), harness.Binary(t), "secrets-encrypt", "rotate-keys", "--data-dir", s1.DataDir)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	harness.WaitFor(ctx, t, 2*time.Minute, "rotate-keys to begin rewriting", func() error {
		if !strings.Contains(buf.String(), "step 3/4: rewriting") {
			return fmt.Errorf("its output so far:\n%s", buf.String())
		}
		return nil
	})
	s1.Kill()
	if err := cmd.Wait(); err == nil {
		t.Fatalf("rotate-keys survived the kill of its server:\n%s", buf.String())
	}
	t.Logf("rotate-keys, %s killed during the rewrite:\n%s", s1.Name, buf.String())
	// A run elsewhere refuses while server 1 is down (once its report is
	// DownAfter old), naming it.
	harness.WaitFor(ctx, t, secretsencrypt.DownAfter+time.Minute, s2.Name+" to see "+s1.Name+" down", func() error {
		st := encryptionStatus(t, s2)
		if st.Change != "rotate-keys" {
			return fmt.Errorf("the interrupted change is not recorded: %+v", st)
		}
		for _, srv := range st.Servers {
			if srv.Name == s1.Name && srv.State == "down" {
				return nil
			}
		}
		return fmt.Errorf("servers: %+v", st.Servers)
	})
	refused, code := s2.Hakube("secrets-encrypt", "rotate-keys")
	if code == 0 || !strings.Contains(refused, "a server is down: "+s1.Name) {
		t.Fatalf("rotate-keys on %s with %s down: exit %d\n%s", s2.Name, s1.Name, code, refused)
	}
	t.Logf("rotate-keys on %s while %s is down: %s", s2.Name, s1.Name, strings.TrimSpace(refused))

	s1.Start()
	out, code = s1.Hakube("secrets-encrypt", "rotate-keys")
	if code != 0 || !strings.Contains(out, "resuming the rotate-keys") {
		t.Fatalf("rotate-keys run again on %s: exit %d\n%s", s1.Name, code, out)
	}
	t.Logf("rotate-keys run again:\n%s", out)
	st := harness.CheckSecretsEncrypted(t, s1)
	if st.Active == first.Active {
		t.Fatalf("the resumed rotation left %s active", st.Active)
	}
	checkSecretsRead(t, c, want, st.Active)
}

// checkSecretsRead: every server reports active as the one key, every
// Secret under it, no change pending, and reads want back unchanged.
func checkSecretsRead(t *testing.T, c *cluster, want map[string]string, active string) {
	t.Helper()
	for _, s := range c.Servers {
		st := harness.CheckSecretsEncrypted(t, s)
		if len(st.Keys) != 1 || st.Active != active || st.Change != "" || !st.ServersAgree {
			t.Fatalf("%s after the rotation: %+v", s.Name, st)
		}
		if got := readSecrets(t, s, "rot"); len(got) != len(want) {
			t.Fatalf("%s reads %d of %d Secrets", s.Name, len(got), len(want))
		} else {
			for name, v := range want {
				if got[name] != v {
					t.Fatalf("%s reads Secret %s as %q, want %q", s.Name, name, got[name], v)
				}
			}
		}
	}
}

// encryptionStatus is 'hakube secrets-encrypt status -o json' on s, whatever
// its exit code.
func encryptionStatus(t *testing.T, s *harness.Server) secretsencrypt.Status {
	t.Helper()
	out, code := s.Hakube("secrets-encrypt", "status", "-o", "json")
	var st secretsencrypt.Status
	if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &st) != nil {
		t.Fatalf("secrets-encrypt status on %s: exit %d\n%s", s.Name, code, out)
	}
	return st
}

// createSecrets creates n Secrets labelled set=prefix through s, 8 at a time,
// and returns their values by name.
func createSecrets(t *testing.T, s *harness.Server, prefix string, n int) map[string]string {
	t.Helper()
	cs := s.Client()
	want := map[string]string{}
	for i := range n {
		want[fmt.Sprintf("%s-%d", prefix, i)] = fmt.Sprintf("value-%d-\x00\xff", i)
	}
	names := make(chan string)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				_, err := cs.CoreV1().Secrets("default").Create(context.Background(), &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"set": prefix}},
					Data:       map[string][]byte{"v": []byte(want[name])}}, metav1.CreateOptions{})
				if err != nil {
					select {
					case errs <- fmt.Errorf("%s: %w", name, err):
					default:
					}
				}
			}
		}()
	}
	for name := range want {
		names <- name
	}
	close(names)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating Secrets through %s: %v", s.Name, err)
	default:
	}
	return want
}

// readSecrets lists the Secrets labelled set=prefix through s.
func readSecrets(t *testing.T, s *harness.Server, prefix string) map[string]string {
	t.Helper()
	list, err := s.Client().CoreV1().Secrets("default").List(context.Background(), metav1.ListOptions{LabelSelector: "set=" + prefix})
	if err != nil {
		t.Fatalf("listing Secrets through %s: %v", s.Name, err)
	}
	got := map[string]string{}
	for _, sec := range list.Items {
		got[sec.Name] = string(sec.Data["v"])
	}
	return got
}

// syncBuffer is a bytes.Buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
