package dqlite

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/k3s-io/kine/pkg/server"

	"github.com/hakube/hakube/internal/datastore"
)

// TestRecoverAfterQuorumLossAndRestore: two of three members are lost; the
// survivor, started with Recover, is a one-member cluster with every key and
// takes writes; a snapshot of it seeds a new cluster elsewhere.
func TestRecoverAfterQuorumLossAndRestore(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	ctx := ctxT(t)
	for i := range 50 {
		if _, err := c.nodes[i%3].Backend().Create(ctx, fmt.Sprintf("/r/%02d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.nodes {
		c.nodes[i].Stop()
		c.nodes[i] = nil
	}
	// Without Recover the survivor alone has no quorum and cannot write.
	survivor := c.cfgs[0]
	c.nodes[0] = c.start(survivor)
	if _, err := c.nodes[0].Backend().Create(ctxWithin(t, 3*time.Second), "/r/lost-quorum", []byte("x"), 0); err == nil {
		t.Fatal("a member without quorum acknowledged a write")
	}
	c.nodes[0].Stop()

	survivor.Recover = true
	c.nodes[0] = c.start(survivor)
	c.waitVoters(1)
	b := c.nodes[0].Backend()
	if _, err := b.Create(ctx, "/r/after-reset", []byte("y"), 0); err != nil {
		t.Fatalf("write after the reset: %v", err)
	}
	if _, n, err := b.Count(ctx, "/r/", "/r0", 0); err != nil || n != 51 {
		t.Fatalf("after the reset: %d keys (%v), want 51", n, err)
	}

	// Restore: the snapshot RPC's file seeds a new one-member cluster.
	resp, err := c.nodes[0].http.Get("https://" + survivor.Advertise + "/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot: %s", resp.Status)
	}
	file := filepath.Join(t.TempDir(), "snap.db")
	f, _ := os.Create(file)
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cfg := c.config(5, c.ca)
	staged, err := Stage(filepath.Dir(cfg.Dir), file)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := staged.Get("/r/07"); err != nil || !ok || string(v) != "7" {
		t.Fatalf("staged snapshot: /r/07 = %q, %v, %v", v, ok, err)
	}
	cfg.RestoreFrom = staged.Path()
	c.cfgs = append(c.cfgs, cfg)
	c.nodes = append(c.nodes, c.start(cfg))
	rb := c.nodes[len(c.nodes)-1].Backend()
	if _, n, err := rb.Count(ctx, "/r/", "/r0", 0); err != nil || n != 51 {
		t.Fatalf("restored member: %d keys (%v), want 51", n, err)
	}
	// Revisions go on past any the old cluster reached; older ones read as compacted.
	rev, kv, err := rb.Get(ctx, "/r/07", 0, false)
	if err != nil || kv == nil || rev < datastore.RestoreRevisionBump {
		t.Fatalf("restored member: revision %d, /r/07 %v (%v), want a revision past %d", rev, kv, err, int64(datastore.RestoreRevisionBump))
	}
	if _, _, err := rb.Get(ctx, "/r/07", kv.ModRevision, false); !errors.Is(err, server.ErrCompacted) {
		t.Fatalf("read at the snapshot's revision %d after the restore: %v, want compacted", kv.ModRevision, err)
	}
	if wrev, err := rb.Create(ctx, "/r/after-restore", []byte("z"), 0); err != nil || wrev != rev+1 {
		t.Fatalf("write after the restore: revision %d (%v), want %d", wrev, err, rev+1)
	}

	// A file that is not SQLite is refused before anything is written.
	junk := filepath.Join(t.TempDir(), "junk.db")
	_ = os.WriteFile(junk, []byte("not a database at all, but long enough to be read"), 0o600)
	if _, err := Stage(filepath.Join(t.TempDir(), "db"), junk); err == nil {
		t.Fatal("a junk file was staged")
	}
}

// TestVacuumFollowers: after many keys are deleted and compacted away, the
// leader has each fragmented follower vacuum its state in turn; the cluster
// keeps taking writes and the followers' free pages are given back.
func TestVacuumFollowers(t *testing.T) {
	c := newTestCluster(t)
	c.form(3, nil)
	ctx := ctxT(t)
	l := c.leader()
	b := c.nodes[l].Backend()
	value := make([]byte, 8<<10)
	var rev int64
	for i := range 400 {
		r, err := b.Create(ctx, fmt.Sprintf("/v/%03d", i), value, 0)
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	for i := range 400 {
		r, _, _, err := b.Delete(ctx, fmt.Sprintf("/v/%03d", i), 0)
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if _, err := b.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if err := n.linearize(ctx); err != nil {
			t.Fatal(err)
		}
	}
	freeOf := func() map[string]int64 {
		out := map[string]int64{}
		for _, n := range c.nodes {
			st := n.status()
			out[st.ID] = st.DBFree
		}
		return out
	}
	before := freeOf()
	if done := c.nodes[l].vacuumFollowers(ctx, 1<<20); done != 2 {
		t.Fatalf("%d followers vacuumed, want 2 (free bytes before: %v)", done, before)
	}
	after := freeOf()
	for id, free := range after {
		if id == c.cfgs[l].ID {
			continue
		}
		if before[id] < 1<<20 || free > before[id]/10 {
			t.Fatalf("%s: %d free bytes before the vacuum, %d after", id, before[id], free)
		}
	}
	if _, err := b.Create(ctx, "/v/after", []byte("x"), 0); err != nil {
		t.Fatalf("write after the vacuum: %v", err)
	}
}
