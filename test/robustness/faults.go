package robustness

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hakube/hakube/test/harness"
)

// faultDuration is how long a fault lasts: longer than the election timeout (3 s).
const faultDuration = 6 * time.Second

// Fault is one injected failure; Heal undoes it and returns once the victim
// process is running again.
type Fault struct {
	Name string
	// Target picks the victim: the leader, or a follower.
	Leader bool
	Inject func(t testing.TB, c *harness.Cluster, victim *harness.Server)
	Heal   func(t testing.TB, c *harness.Cluster, victim *harness.Server)
}

func linkSet(t testing.TB, h *harness.Host, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", h.Name, "link", "set", "eth0", state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set eth0 %s in %s: %v\n%s", state, h.Name, err, out)
	}
}

func signal(t testing.TB, s *harness.Server, sig syscall.Signal) {
	t.Helper()
	if err := s.Signal(sig); err != nil {
		t.Fatalf("%v to %s: %v", sig, s.Name, err)
	}
}

// Faults lists the scenarios the suite runs, one fault per run.
func Faults() []Fault {
	kill := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { s.Kill() }
	restart := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { s.Start() }
	stop := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { signal(t, s, syscall.SIGSTOP) }
	cont := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { signal(t, s, syscall.SIGCONT) }
	isolate := func(t testing.TB, c *harness.Cluster, s *harness.Server) { linkSet(t, c.HostOf(s), "down") }
	reconnect := func(t testing.TB, c *harness.Cluster, s *harness.Server) { linkSet(t, c.HostOf(s), "up") }
	return []Fault{
		{Name: "sigkill-leader", Leader: true, Inject: kill, Heal: restart},
		{Name: "sigkill-follower", Inject: kill, Heal: restart},
		{Name: "sigstop-leader", Leader: true, Inject: stop, Heal: cont},
		{Name: "partition-follower", Inject: isolate, Heal: reconnect},
		{Name: "partition-leader", Leader: true, Inject: isolate, Heal: reconnect},
	}
}

// pickVictim returns the leader's server, or the first follower's.
func pickVictim(t testing.TB, c *harness.Cluster, leader bool) *harness.Server {
	l := c.Leader(t, c.Servers[0])
	if leader {
		return l
	}
	for _, s := range c.Servers {
		if s != l {
			return s
		}
	}
	panic(fmt.Sprintf("no follower among %d servers", len(c.Servers)))
}
