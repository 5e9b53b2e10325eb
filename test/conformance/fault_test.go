package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/test/harness"
)

// faultLog is what the fault did, for the summary.
type faultLog struct {
	mu    sync.Mutex
	kills []string
}

func (f *faultLog) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, fmt.Sprintf(format, args...))
}

func (f *faultLog) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.kills...)
}

// killLeaders SIGKILLs the datastore leader's server every period, and
// restarts it 20 s later (long enough for the others to elect a leader and
// for the apiservers to notice), until ctx ends. It runs beside the test's
// goroutine, so it reports with Logf and Errorf only.
func killLeaders(ctx context.Context, t *testing.T, c *harness.Cluster, bin string, period time.Duration, log *faultLog) {
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
		victim, err := leader(c, bin)
		if err != nil {
			log.add("%s: no leader found: %v", time.Now().Format(time.TimeOnly), err)
			continue
		}
		killed := time.Now()
		t.Logf("fault %d: SIGKILL %s, the datastore leader", n, victim.Name)
		victim.Kill()
		time.Sleep(20 * time.Second)
		if err := victim.StartAsync(); err != nil {
			t.Errorf("fault %d: restarting %s: %v", n, victim.Name, err)
			return
		}
		if err := victim.WaitReady(5 * time.Minute); err != nil {
			t.Errorf("fault %d: %v", n, err)
			return
		}
		next, _ := leader(c, bin)
		name := "?"
		if next != nil {
			name = next.Name
		}
		log.add("%s: killed %s (leader), ready again %s after the kill; leader now %s",
			killed.Format(time.TimeOnly), victim.Name, time.Since(killed).Round(time.Second), name)
	}
}

// leader asks each running server for the member list until one names the
// leader: 'hakube etcd member list' works on etcd and Dqlite alike.
func leader(c *harness.Cluster, bin string) (*harness.Server, error) {
	var last error
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		argv := append(append(append([]string{}, s.Wrap...), bin), "etcd", "member", "list", "-o", "json", "--data-dir", s.DataDir)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		cancel()
		if err != nil {
			last = fmt.Errorf("%s: %v", s.Name, err)
			continue
		}
		var ms []datastore.Member
		if i := strings.Index(string(out), "["); i < 0 {
			last = fmt.Errorf("%s: no member list in %q", s.Name, out)
			continue
		} else if err := json.Unmarshal(out[i:], &ms); err != nil {
			last = fmt.Errorf("%s: %v", s.Name, err)
			continue
		}
		for _, m := range ms {
			if m.Leader {
				if l := c.ServerOf(m.Name); l != nil {
					return l, nil
				}
			}
		}
		last = fmt.Errorf("%s lists no leader", s.Name)
	}
	return nil, last
}
