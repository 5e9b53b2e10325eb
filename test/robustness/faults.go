package robustness

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hakube/hakube/test/harness"
)

// faultDuration is how long a fault lasts: longer than the election timeouts
// (etcd 1 s, Dqlite 0.7 s, each randomized up to twice that).
const faultDuration = 6 * time.Second

// Fault is one injected failure; Heal undoes it and returns once the victim
// process is running again.
type Fault struct {
	Name string
	// Target picks the victim: the leader, or a follower.
	Leader bool
	// MinServers is the smallest cluster the fault makes sense on.
	MinServers int
	Inject     func(t testing.TB, c *harness.Cluster, victim *harness.Server)
	Heal       func(t testing.TB, c *harness.Cluster, victim *harness.Server)
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

// Faults lists the scenarios the suite runs, one fault per run; p is the
// cluster's peer proxy.
func Faults(p *peerProxy) []Fault {
	kill := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { s.Kill() }
	restart := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { s.StartIn(t) }
	stop := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { signal(t, s, syscall.SIGSTOP) }
	cont := func(t testing.TB, _ *harness.Cluster, s *harness.Server) { signal(t, s, syscall.SIGCONT) }
	isolate := func(t testing.TB, c *harness.Cluster, s *harness.Server) { linkSet(t, c.HostOf(s), "down") }
	reconnect := func(t testing.TB, c *harness.Cluster, s *harness.Server) { linkSet(t, c.HostOf(s), "up") }
	// Up to 0.5 s of delay per chunk: longer than the heartbeats (etcd
	// 100 ms, Dqlite 70 ms), below the election timeouts (etcd 1 s, Dqlite
	// 0.7 s); an election it causes anyway must still lose nothing.
	delay := func(t testing.TB, c *harness.Cluster, s *harness.Server) {
		p.set(c.HostOf(s).IP, 100*time.Millisecond, 400*time.Millisecond, 0)
	}
	drop := func(t testing.TB, c *harness.Cluster, s *harness.Server) { p.set(c.HostOf(s).IP, 0, 0, 0.2) }
	undisturb := func(t testing.TB, _ *harness.Cluster, s *harness.Server) {
		// A fault that touched no peer traffic would prove nothing.
		n := p.set("", 0, 0, 0)
		if n == 0 {
			t.Fatalf("no peer traffic of %s passed the proxy during the fault", s.Name)
		}
		t.Logf("the proxy disturbed %d chunks of %s's peer traffic", n, s.Name)
	}
	return []Fault{
		{Name: "member-replace", MinServers: 2, Inject: removeAndWipe(p), Heal: rejoin},
		{Name: "full-stop-start", MinServers: 1, Inject: stopAll, Heal: startAllReversed},
		{Name: "sigkill-leader", Leader: true, MinServers: 1, Inject: kill, Heal: restart},
		{Name: "sigkill-follower", MinServers: 2, Inject: kill, Heal: restart},
		{Name: "sigstop-leader", Leader: true, MinServers: 1, Inject: stop, Heal: cont},
		{Name: "sigstop-follower", MinServers: 2, Inject: stop, Heal: cont},
		{Name: "partition-follower", MinServers: 2, Inject: isolate, Heal: reconnect},
		{Name: "partition-leader", Leader: true, MinServers: 2, Inject: isolate, Heal: reconnect},
		{Name: "peer-delay-leader", Leader: true, MinServers: 2, Inject: delay, Heal: undisturb},
		{Name: "peer-drop-leader", Leader: true, MinServers: 2, Inject: drop, Heal: undisturb},
	}
}

// pickVictim returns the leader's server, or the first follower's.
func pickVictim(t testing.TB, c *harness.Cluster, leader bool) *harness.Server {
	l := c.Leader(t, c.Servers[0])
	if leader || len(c.Servers) == 1 { // faults on the whole cluster take any victim
		return l
	}
	for _, s := range c.Servers {
		if s != l {
			return s
		}
	}
	panic(fmt.Sprintf("no follower among %d servers", len(c.Servers)))
}

// removeAndWipe removes the victim's member through another server, waits for
// the victim to stop, and wipes its data dir: a disk that died.
func removeAndWipe(p *peerProxy) func(testing.TB, *harness.Cluster, *harness.Server) {
	return func(t testing.TB, c *harness.Cluster, victim *harness.Server) {
		t.Helper()
		other := c.Servers[0]
		if other == victim {
			other = c.Servers[1]
		}
		var name string
		for _, m := range c.Members(t, other) {
			if c.ServerOf(m.Name) == victim {
				name = m.Name
			}
		}
		if out, code := other.Hakube("etcd", "member", "remove", name); code != 0 {
			t.Fatalf("member remove %s: %s\npeer connections now:\n%s", name, out, p.probe(c))
		}
		deadline := time.Now().Add(time.Minute)
		for victim.Running() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if victim.Running() {
			t.Fatalf("%s kept running after its removal", victim.Name)
		}
		if err := os.RemoveAll(victim.DataDir); err != nil {
			t.Fatal(err)
		}
	}
}

// rejoin starts the wiped server as a new member.
func rejoin(t testing.TB, c *harness.Cluster, victim *harness.Server) {
	t.Helper()
	other := c.Servers[0]
	if other == victim {
		other = c.Servers[1]
	}
	// The scenario's t: a join that does not get ready fails the scenario,
	// which keeps the data dirs and logs.
	victim.StartIn(t, "--server", other.URL())
}

// stopAll stops every server (SIGTERM), as a power cut with a clean shutdown.
func stopAll(t testing.TB, c *harness.Cluster, _ *harness.Server) {
	t.Helper()
	for _, s := range c.Servers {
		s.Stop()
	}
}

// startAllReversed brings the servers back in reverse order, the first last.
func startAllReversed(t testing.TB, c *harness.Cluster, _ *harness.Server) {
	c.StartAllReversed(t, 5*time.Minute)
}

// probe makes a request to every server's peer port from every other
// server's host, with that server's peer certificate, through the hosts'
// proxies as the members' own connections go: any HTTP status shows the
// path works (000 and an error that it does not), which tells a broken path
// from a member that does not reconnect.
func (p *peerProxy) probe(c *harness.Cluster) string {
	var b strings.Builder
	for _, from := range c.Servers {
		for _, to := range c.Servers {
			if from == to {
				continue
			}
			url := "https://" + c.HostOf(to).IP + ":" + strconv.Itoa(p.port) + "/version"
			tls := from.Layout().TLS()
			args := append(c.HostOf(from).Wrap(), "curl", "-sk", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
				"--cert", tls.Cert(p.cert), "--key", tls.Key(p.cert), url)
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			fmt.Fprintf(&b, "%s -> %s: %s %v\n", from.Name, to.Name, out, err)
		}
	}
	return b.String()
}
