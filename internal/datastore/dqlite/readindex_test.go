package dqlite

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/k3s-io/kine/pkg/server"
)

// gate holds the traffic through it while closed.
type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gate) pass() {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	<-ch
}

// heldConn passes what it reads through in and what it writes through out.
// A read returns its data only once in is open, so data that arrives while
// in is closed waits, as it waits in the socket buffers of a paused process.
type heldConn struct {
	net.Conn
	in, out *gate
}

func (c *heldConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.pass()
	return n, err
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.out.pass()
	return c.Conn.Write(p)
}

// TestDeposedLeaderServesNoStaleRead is the CI failure of the sigstop-leader
// robustness scenario: the leader is paused, the others elect a new leader
// and take a write, and a read that reached the old leader during the pause
// must not see the old value when the old leader resumes. The followers'
// answers to the old leader's last requests, sent before the pause, reach it
// first; Raft's VerifyLeader counted them as a fresh confirmation.
func TestDeposedLeaderServesNoStaleRead(t *testing.T) {
	// replies: what m2 reads on the connections it dialed (answers to its
	// AppendEntries); rest: all else m2 sends or receives over Raft.
	replies, rest := newGate(), newGate()
	c := newTestCluster(t)
	c.form(3, func(cfg *Config) {
		if cfg.ID != "m2" {
			return
		}
		// A paused leader cannot check its lease; here m2 runs, so its lease
		// (half its heartbeat timeout, 10 s) must outlast the pause (~2 s).
		cfg.HeartbeatTimeout, cfg.ElectionTimeout = 20*time.Second, 20*time.Second
		cfg.raftConn = func(conn net.Conn, dialed bool) net.Conn {
			if dialed {
				return &heldConn{Conn: conn, in: replies, out: rest}
			}
			return &heldConn{Conn: conn, in: rest, out: rest}
		}
	})
	t.Cleanup(func() { replies.release(); rest.release() })
	ctx := ctxT(t)
	old := c.nodes[2]
	if l := c.leader(); l != 2 {
		if err := c.nodes[l].raft.LeadershipTransferToServer(raft.ServerID("m2"), raft.ServerAddress(c.cfgs[2].Advertise)).Error(); err != nil {
			t.Fatalf("handing the leadership to m2: %v", err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); old.raft.State() != raft.Leader || old.readyGen.Load() != old.leaderGen.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("m2 does not lead after the leadership transfer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rev, err := old.Backend().Create(ctx, "/r/k", []byte("old"), 0)
	if err != nil {
		t.Fatal(err)
	}

	// The pause: first the followers' answers pile up (m2 sends an
	// AppendEntries every 10-20 ms), then nothing goes in or out.
	replies.hold()
	time.Sleep(200 * time.Millisecond)
	rest.hold()
	paused := time.Now()
	var next *Node
	for next == nil {
		for _, n := range c.nodes[:2] {
			if n.raft.State() == raft.Leader && n.readyGen.Load() == n.leaderGen.Load() {
				next = n
			}
		}
		if time.Since(paused) > 5*time.Second {
			t.Fatal("m0 and m1 elected no leader while m2 was paused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, ok, err := next.Backend().Update(ctx, "/r/k", []byte("new"), rev, 0); err != nil || !ok {
		t.Fatalf("write on the new leader: ok=%v err=%v", ok, err)
	}

	type read struct {
		kv  *server.KeyValue
		err error
	}
	got := make(chan read, 1)
	go func() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, kv, err := old.Backend().Get(rctx, "/r/k", 0, false)
		got <- read{kv, err}
	}()
	time.Sleep(300 * time.Millisecond) // the read is queued on m2
	// The resume: the stale answers reach m2 before anything sent after the
	// pause does.
	replies.release()
	time.Sleep(300 * time.Millisecond)
	rest.release()
	t.Logf("paused %v", time.Since(paused).Round(time.Millisecond))

	r := <-got
	switch {
	case r.err != nil:
		t.Logf("the read on the deposed leader failed, as it may: %v", r.err)
	case r.kv == nil || string(r.kv.Value) != "new":
		t.Fatalf("the read on the deposed leader returned %+v, not the value written on the new leader", r.kv)
	}
}

// TestReadBatches: reads that arrive while a barrier is in flight share the
// next one, never the one in flight.
func TestReadBatches(t *testing.T) {
	var r readBatches
	started, finish := make(chan uint64), make(chan struct{})
	var seq uint64
	propose := func() (uint64, error) {
		seq++
		started <- seq
		<-finish
		return seq, nil
	}
	first := r.join(propose)
	if i := <-started; i != 1 {
		t.Fatalf("barrier %d proposed first", i)
	}
	second, third := r.join(propose), r.join(propose)
	if second == first {
		t.Fatal("a read joined the barrier in flight, proposed before it arrived")
	}
	if second != third {
		t.Fatal("two reads waiting for the next barrier got different batches")
	}
	finish <- struct{}{}
	<-first.done
	if i := <-started; i != 2 || first.index != 1 {
		t.Fatalf("barrier %d proposed second; the first batch got index %d", i, first.index)
	}
	finish <- struct{}{}
	<-second.done
	if second.index != 2 || second.err != nil {
		t.Fatalf("second batch: index %d, %v", second.index, second.err)
	}
}

// BenchmarkLinearizableGet reads one key through the leader and through a
// follower, one and 16 at a time.
func BenchmarkLinearizableGet(b *testing.B) {
	c := newTestCluster(b)
	c.form(3, nil)
	ctx := context.Background()
	l := c.leader()
	if _, err := c.nodes[l].Backend().Create(ctx, "/r/k", []byte("v"), 0); err != nil {
		b.Fatal(err)
	}
	for _, on := range []struct {
		name string
		n    *Node
	}{{"leader", c.nodes[l]}, {"follower", c.nodes[(l+1)%3]}} {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s-%d", on.name, clients), func(b *testing.B) {
				var wg sync.WaitGroup
				for i := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := i; j < b.N; j += clients {
							if _, _, err := on.n.Backend().Get(ctx, "/r/k", 0, false); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}
