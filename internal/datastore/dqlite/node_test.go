package dqlite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/k3s-io/kine/pkg/server"

	"github.com/hakube/hakube/internal/pki"
)

// testCluster runs real members on loopback: real Raft over mutual TLS, real SQLite.
type testCluster struct {
	t     testing.TB
	ca    *pki.CA
	dir   string
	nodes []*Node
	cfgs  []Config
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newTestCluster(t testing.TB) *testCluster {
	ca, err := pki.NewCA("test-peer-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca, dir: dir}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n != nil {
				n.Stop()
			}
		}
	})
	return c
}

// config prepares member i's config with its own certificate.
func (c *testCluster) config(i int, ca *pki.CA) Config {
	name := fmt.Sprintf("m%d", i)
	d := filepath.Join(c.dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		c.t.Fatal(err)
	}
	cert, key := filepath.Join(d, "peer.crt"), filepath.Join(d, "peer.key")
	if err := ca.IssueFiles(pki.Leaf{CommonName: name, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: pki.ServerAuth | pki.ClientAuth}, cert, key); err != nil {
		c.t.Fatal(err)
	}
	addr := freeAddr(c.t)
	cfg := NewConfig()
	cfg.Dir, cfg.ID, cfg.Listen, cfg.Advertise = filepath.Join(d, "data"), name, addr, addr
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = filepath.Join(c.dir, "ca.crt"), cert, key
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
	return cfg
}

func (c *testCluster) start(cfg Config) *Node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("starting %s: %v", cfg.ID, err)
	}
	return n
}

// form starts member 0 as a new cluster and size-1 members joining it, and
// waits until all are voters.
func (c *testCluster) form(size int, tune func(*Config)) {
	c.t.Helper()
	for i := range size {
		cfg := c.config(i, c.ca)
		if tune != nil {
			tune(&cfg)
		}
		if i == 0 {
			cfg.Bootstrap = true
		} else {
			cfg.Join = c.cfgs[0].Advertise
		}
		c.cfgs = append(c.cfgs, cfg)
		c.nodes = append(c.nodes, c.start(cfg))
	}
	c.waitVoters(size)
}

func (c *testCluster) waitVoters(want int) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var live *Node
		for _, n := range c.nodes {
			if n != nil {
				live = n
				break
			}
		}
		ms, err := live.Members(context.Background())
		voters := 0
		for _, m := range ms {
			if m.Voter && m.Healthy {
				voters++
			}
		}
		if err == nil && voters == want && len(ms) == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("want %d healthy voters, have %+v (%v)", want, ms, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *testCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range c.nodes {
			if n != nil && n.raft.State().String() == "Leader" && n.readyGen.Load() == n.leaderGen.Load() {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("no leader")
	return -1
}

func ctxT(t *testing.T) context.Context { return ctxWithin(t, 30*time.Second) }

// ctxWithin is a context that ends after d or with the test.
func ctxWithin(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestWritesThroughFollowersAndLinearizableReads(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	ctx := ctxT(t)
	l := c.leader()
	f := c.nodes[(l+1)%3].Backend()

	rev, err := f.Create(ctx, "/registry/a", []byte("v1"), 0)
	if err != nil {
		t.Fatalf("create through a follower: %v", err)
	}
	if _, err := f.Create(ctx, "/registry/a", []byte("again"), 0); !errors.Is(err, server.ErrKeyExists) {
		t.Fatalf("second create: want ErrKeyExists, got %v", err)
	}
	// Every member's read right after the acknowledged write sees it.
	for i, n := range c.nodes {
		_, kv, err := n.Backend().Get(ctx, "/registry/a", 0, false)
		if err != nil || kv == nil || string(kv.Value) != "v1" || kv.ModRevision != rev || kv.CreateRevision != rev || kv.Version != 1 {
			t.Fatalf("member %d read %+v, %v; want v1 at revision %d", i, kv, err, rev)
		}
	}
	// Compare-and-set on the mod revision.
	if _, kv, ok, err := f.Update(ctx, "/registry/a", []byte("stale"), rev-1, 0); err != nil || ok || string(kv.Value) != "v1" {
		t.Fatalf("update with a stale revision: ok=%v kv=%+v err=%v", ok, kv, err)
	}
	rev2, kv, ok, err := c.nodes[l].Backend().Update(ctx, "/registry/a", []byte("v2"), rev, 0)
	if err != nil || !ok || kv.Version != 2 || kv.CreateRevision != rev || kv.ModRevision != rev2 {
		t.Fatalf("update: ok=%v kv=%+v err=%v", ok, kv, err)
	}
	if _, err := f.Create(ctx, "/registry/b", []byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	cur, kvs, err := f.List(ctx, "/registry/", "/registry0", 0, 0, false)
	if err != nil || len(kvs) != 2 || string(kvs[0].Value) != "v2" || kvs[1].Key != "/registry/b" {
		t.Fatalf("list: %+v %v", kvs, err)
	}
	// A list at the older revision sees the older value and no b.
	_, old, err := f.List(ctx, "/registry/", "/registry0", 0, rev, false)
	if err != nil || len(old) != 1 || string(old[0].Value) != "v1" {
		t.Fatalf("list at revision %d: %+v %v", rev, old, err)
	}
	if _, n, err := f.Count(ctx, "/registry/", "/registry0", 0); err != nil || n != 2 {
		t.Fatalf("count: %d %v", n, err)
	}
	_, del, ok, err := f.Delete(ctx, "/registry/a", rev2)
	if err != nil || !ok || string(del.Value) != "v2" {
		t.Fatalf("delete: ok=%v kv=%+v err=%v", ok, del, err)
	}
	if _, _, ok, err := f.Delete(ctx, "/registry/a", rev2); err != nil || ok {
		t.Fatalf("deleting a deleted key with a revision condition: ok=%v err=%v", ok, err)
	}
	if _, kv, err := c.nodes[(l+2)%3].Backend().Get(ctx, "/registry/a", 0, false); err != nil || kv != nil {
		t.Fatalf("read after delete: %+v %v", kv, err)
	}
	// Every member's watch from the first write replays the same history.
	for i, n := range c.nodes {
		wctx, cancel := context.WithCancel(ctx)
		wr := n.Backend().Watch(wctx, rev)
		var got []string
		for len(got) < 4 {
			select {
			case b := <-wr.Eventc:
				for _, e := range b.Events {
					got = append(got, e.String())
					if e.Delete && (e.PrevKV == nil || string(e.PrevKV.Value) != "v2") {
						t.Fatalf("member %d: delete event without the deleted value: %+v", i, e.PrevKV)
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("member %d: watch gave %v", i, got)
			}
		}
		cancel()
		want := []string{fmt.Sprintf("+/registry/a@%d", rev), fmt.Sprintf("=/registry/a@%d", rev2), fmt.Sprintf("+/registry/b@%d", rev2+1), fmt.Sprintf("-/registry/a@%d", rev2+2)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("member %d watch: %v, want %v", i, got, want)
		}
		if cur != rev2+1 {
			t.Fatalf("list revision %d, want %d", cur, rev2+1)
		}
	}
}

func TestLeaderLossKeepsAcknowledgedWrites(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	ctx := ctxT(t)
	l := c.leader()
	// A watch on a follower that survives the leader.
	survivor := c.nodes[(l+1)%3]
	wr := survivor.Backend().Watch(ctx, 0)
	for i := range 20 {
		if _, err := c.nodes[l].Backend().Create(ctx, fmt.Sprintf("/k/%02d", i), []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	c.nodes[l].Stop()
	c.nodes[l] = nil
	began := time.Now()
	// As a client would: retry a write whose outcome is unknown; "exists"
	// then means an earlier attempt applied.
	for {
		_, err := survivor.Backend().Create(ctx, "/k/after", []byte("y"), 0)
		if err == nil || errors.Is(err, server.ErrKeyExists) {
			break
		}
		t.Logf("write after the leader stopped: %v", err)
		if ctx.Err() != nil {
			t.Fatal("no write succeeded after the leader stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first write after the leader stopped took %v", time.Since(began))
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		_, kvs, err := n.Backend().List(ctx, "/k/", "/k0", 0, 0, false)
		if err != nil || len(kvs) != 21 {
			t.Fatalf("%s lists %d keys (%v), want 21", n.cfg.ID, len(kvs), err)
		}
	}
	seen := 0
	for seen < 21 {
		select {
		case b := <-wr.Eventc:
			seen += len(b.Events)
		case <-time.After(10 * time.Second):
			t.Fatalf("watch on the survivor saw %d of 21 events", seen)
		}
	}
}

func TestSnapshotsRestartAndNewMember(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, func(cfg *Config) { cfg.SnapshotThreshold, cfg.SnapshotInterval = 64, time.Second })
	ctx := ctxT(t)
	b := c.nodes[0].Backend()
	for i := range 300 {
		if _, err := b.Create(ctx, fmt.Sprintf("/s/%03d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	snaps, _ := filepath.Glob(filepath.Join(c.cfgs[1].Dir, "snapshots", "*"))
	deadline := time.Now().Add(30 * time.Second)
	for len(snaps) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		snaps, _ = filepath.Glob(filepath.Join(c.cfgs[1].Dir, "snapshots", "*"))
	}
	if len(snaps) == 0 {
		t.Fatal("no snapshot taken after 300 writes with a threshold of 64")
	}
	// A restarted member rebuilds its state from its snapshot and log.
	c.nodes[1].Stop()
	c.nodes[1] = c.start(c.cfgs[1])
	if _, n, err := c.nodes[1].Backend().Count(ctx, "/s/", "/s0", 0); err != nil || n != 300 {
		t.Fatalf("restarted member counts %d keys (%v), want 300", n, err)
	}
	// A new member gets the leader's snapshot, not the whole log.
	cfg := c.config(3, c.ca)
	cfg.SnapshotThreshold, cfg.SnapshotInterval = 64, time.Second
	cfg.Join = c.cfgs[2].Advertise // any member: the request is passed to the leader
	c.cfgs = append(c.cfgs, cfg)
	c.nodes = append(c.nodes, c.start(cfg))
	c.waitVoters(4)
	if _, n, err := c.nodes[3].Backend().Count(ctx, "/s/", "/s0", 0); err != nil || n != 300 {
		t.Fatalf("new member counts %d keys (%v), want 300", n, err)
	}
}

func TestLeasesCompactionAndRemoval(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	ctx := ctxT(t)
	b := c.nodes[1].Backend()
	wr := b.Watch(ctx, 0)
	if _, err := b.Create(ctx, "/lease/short", []byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "/lease/none", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(15 * time.Second)
	for expired := false; !expired; {
		select {
		case batch := <-wr.Eventc:
			for _, e := range batch.Events {
				expired = expired || (e.Delete && e.KV.Key == "/lease/short")
			}
		case <-deadline:
			t.Fatal("the key with a 1 s lease was not deleted")
		}
	}
	if _, kv, err := b.Get(ctx, "/lease/none", 0, false); err != nil || kv == nil {
		t.Fatalf("key without lease: %+v %v", kv, err)
	}

	// Compaction: older revisions are gone, the current state stays.
	r1, err := b.Create(ctx, "/c", []byte("1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	r2, _, _, err := b.Update(ctx, "/c", []byte("2"), r1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Compact(ctx, r2); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, _, err := b.Get(ctx, "/c", r1, false); !errors.Is(err, server.ErrCompacted) {
		t.Fatalf("read below the compact revision: %v", err)
	}
	if wr := b.Watch(ctx, r1); wr.CompactRevision != r2 {
		t.Fatalf("watch below the compact revision: compact revision %d, want %d", wr.CompactRevision, r2)
	}
	for i, n := range c.nodes {
		if _, kv, err := n.Backend().Get(ctx, "/c", 0, false); err != nil || string(kv.Value) != "2" {
			t.Fatalf("member %d after compaction: %+v %v", i, kv, err)
		}
	}

	// Removing a member: it notices; the others keep a quorum.
	if err := c.nodes[0].RemoveMember(ctx, "m2"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	select {
	case <-c.nodes[2].Removed():
	case <-time.After(20 * time.Second):
		t.Fatal("the removed member did not notice")
	}
	c.nodes[2].Stop()
	// Restarted from its state, it finds itself removed at once.
	c.nodes[2] = c.start(c.cfgs[2])
	select {
	case <-c.nodes[2].Removed():
	case <-time.After(10 * time.Second):
		t.Fatal("a removed member restarted from its state did not notice its removal")
	}
	c.nodes[2].Stop()
	c.nodes[2] = nil
	c.waitVoters(2)
	// With two voters left and one of them down, removing the other is refused.
	c.nodes[1].Stop()
	c.nodes[1] = nil
	if err := c.nodes[0].RemoveMember(ctx, "m1"); err == nil {
		t.Fatal("removal that leaves no quorum was accepted")
	}
}

func TestCommandEncoding(t *testing.T) {
	in := &command{Op: opUpdate, Key: "/registry/x", Value: []byte{0, 1, 2}, Lease: 60, Rev: 42, Now: -7}
	out, err := unmarshalCommand(in.marshal())
	if err != nil || fmt.Sprint(*out) != fmt.Sprint(*in) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	b := in.marshal()
	for i := range len(b) {
		if _, err := unmarshalCommand(b[:i]); err == nil {
			t.Fatalf("a command cut at %d of %d bytes was accepted", i, len(b))
		}
	}
}

// TestMemberRemovedWhileDown: a member removed while it was stopped restarts
// from a state that still lists it, so no leader ever contacts it; it learns
// of its removal from the leader among its peers.
func TestMemberRemovedWhileDown(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	down := 2
	c.nodes[down].Stop()
	c.nodes[down] = nil
	if err := c.nodes[0].RemoveMember(ctxT(t), c.cfgs[down].ID); err != nil {
		t.Fatalf("removing a stopped member: %v", err)
	}
	c.nodes[down] = c.start(c.cfgs[down])
	select {
	case <-c.nodes[down].Removed():
	case <-time.After(30 * time.Second):
		t.Fatal("a member removed while it was down did not notice its removal")
	}
}

// TestJoinerRemovedAtOnce: a member removed right after its join, before it
// has seen itself in its configuration, still notices; also when the leader
// sent it nothing at all (its Raft connections cut), so that its
// configuration is empty and it knows only the member it joined through.
func TestJoinerRemovedAtOnce(t *testing.T) {
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("raft-cut=%v", cut), func(t *testing.T) {
			c := newTestCluster(t)
			c.form(3, nil)
			cfg := c.config(3, c.ca)
			cfg.Join = c.cfgs[1].Advertise
			if cut {
				cfg.raftConn = func(conn net.Conn, _ bool) net.Conn { _ = conn.Close(); return conn }
			}
			c.cfgs = append(c.cfgs, cfg)
			c.nodes = append(c.nodes, c.start(cfg))
			if err := c.nodes[0].RemoveMember(ctxT(t), cfg.ID); err != nil {
				t.Fatalf("remove: %v", err)
			}
			// It notices after three leaderless 2 s ticks and a call to the
			// leader: ~6 s, more on a loaded machine (22 s seen beside a
			// conformance run).
			select {
			case <-c.nodes[3].Removed():
			case <-time.After(time.Minute):
				t.Fatal("a member removed right after it joined did not notice within a minute")
			}
			c.nodes[3].Stop()
			c.nodes[3] = nil
			c.waitVoters(3)
		})
	}
}

// TestLeaderRemoved: a leader that removes itself shuts Raft down as soon as
// the removal commits (hashicorp/raft's ShutdownOnRemove); it still notices.
func TestLeaderRemoved(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	l := c.leader()
	target := (l + 1) % 3
	if err := c.nodes[l].raft.LeadershipTransferToServer(raft.ServerID(c.cfgs[target].ID), raft.ServerAddress(c.cfgs[target].Advertise)).Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	if got := c.leader(); got != target {
		t.Fatalf("leader %d after the transfer, want %d", got, target)
	}
	if err := c.nodes[l].RemoveMember(ctxT(t), c.cfgs[target].ID); err != nil {
		t.Fatalf("remove: %v", err)
	}
	select {
	case <-c.nodes[target].Removed():
	case <-time.After(time.Minute):
		t.Fatal("a leader that removed itself did not notice within a minute")
	}
	c.nodes[target].Stop()
	c.nodes[target] = nil
	c.waitVoters(2)
}

// TestGracefulStopHandsLeadershipOver: a leader that stops makes another
// member the leader first, well before the survivors' heartbeat timeout could
// have started an election.
func TestGracefulStopHandsLeadershipOver(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, func(cfg *Config) { cfg.HeartbeatTimeout, cfg.ElectionTimeout = 2*time.Second, 2*time.Second })
	l := c.leader()
	c.nodes[l].Stop()
	stopped := time.Now()
	c.nodes[l] = nil
	for time.Since(stopped) < time.Second {
		for _, n := range c.nodes {
			if n != nil && n.raft.State() == raft.Leader {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no survivor leads 1 s after the leader stopped; without a hand-over an election starts after 2 s")
}

// TestCompactionInSteps: a compaction over many revisions is applied as
// several entries, and leaves exactly each key's current row.
func TestCompactionInSteps(t *testing.T) {
	c := newTestCluster(t)
	c.form(1, nil)
	ctx := ctxT(t)
	b := c.nodes[0].Backend()
	var rev int64
	for i := range 2*compactStep + 500 {
		r, _, err := b.Put(ctx, fmt.Sprintf("/s/%d", i%10), []byte(strconv.Itoa(i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	before := c.nodes[0].raft.LastIndex()
	if _, err := b.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if entries := c.nodes[0].raft.LastIndex() - before; entries < 3 {
		t.Fatalf("compaction of %d revisions took %d log entries, want steps of %d", rev, entries, compactStep)
	}
	var rows int
	if err := c.nodes[0].fsm.read(func(st *store) error {
		return st.db.QueryRow(`SELECT COUNT(*) FROM kv`).Scan(&rows)
	}); err != nil {
		t.Fatal(err)
	}
	_, kvs, err := b.List(ctx, "/s/", "/s0", 0, 0, false)
	if err == nil && len(kvs) == 10 && string(kvs[9].Value) != strconv.Itoa(2*compactStep+499) {
		t.Fatalf("/s/9 holds %q after compaction, want the last value", kvs[9].Value)
	}
	if err != nil || len(kvs) != 10 || rows != 10 {
		t.Fatalf("after compaction: %d rows stored, %d keys listed (%v); want 10 and 10", rows, len(kvs), err)
	}
	if _, _, err := b.Get(ctx, "/s/0", rev-100, false); !errors.Is(err, server.ErrCompacted) {
		t.Fatalf("read below the compaction: %v, want compacted", err)
	}
}

// TestPutOnlyWhenEveryMemberKnowsIt: a put is one entry once every member
// says it applies opPut, and the older commands (create, read, update) until
// then, as while a member of an older version is in the cluster.
func TestPutOnlyWhenEveryMemberKnowsIt(t *testing.T) {
	c := newTestCluster(t)
	c.form(1, nil)
	ctx := ctxT(t)
	n := c.nodes[0]
	for deadline := time.Now().Add(10 * time.Second); !n.putOK.Load(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a one-member cluster never allowed opPut")
		}
	}
	b := n.Backend()
	if _, err := b.Create(ctx, "/p", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	entries := func(put func()) uint64 {
		before := n.raft.LastIndex()
		put()
		return n.raft.LastIndex() - before
	}
	put := func(v string) func() {
		return func() {
			if _, prev, err := b.Put(ctx, "/p", []byte(v), 0); err != nil || prev == nil {
				t.Fatalf("put %s: previous %v, %v", v, prev, err)
			}
		}
	}
	if e := entries(put("2")); e != 1 {
		t.Fatalf("a put with opPut allowed took %d entries, want 1", e)
	}
	// What putLoop sets while a member cannot say it knows opPut; putLoop may
	// set it back in between (every 2 s), hence a few tries.
	for try := 0; ; try++ {
		n.putOK.Store(false)
		if e := entries(put("3")); e >= 2 {
			break
		} else if try == 2 {
			t.Fatalf("a put without opPut took %d entries, want the older commands", e)
		}
	}
	_, kv, err := b.Get(ctx, "/p", 0, false)
	if err != nil || kv == nil || string(kv.Value) != "3" {
		t.Fatalf("/p is %v (%v), want 3", kv, err)
	}
}
