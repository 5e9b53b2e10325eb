package dqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/k3s-io/kine/pkg/server"

	lin "github.com/hakube/hakube/test/linearizability"
)

// slot is a member that the fault loop stops and restarts under the clients.
type slot struct {
	mu sync.RWMutex
	n  *Node
}

func (s *slot) backend() *Backend {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.n == nil {
		return nil
	}
	return s.n.Backend()
}

// regClient runs register operations through one member with the operations
// the apiserver uses: create, update on the mod revision, delete, get; and
// the etcd API's put. Values
// are unique, so "mod revision is R" is "value is the one written at R", and
// the value register model applies.
type regClient struct {
	id   int
	s    *slot
	hist *lin.History
	keys []string
	// seen is the last value and revision this client knows per key.
	seen      map[string]server.KeyValue
	seq       int
	ok, unkno int
}

func (c *regClient) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(c.id), uint64(time.Now().UnixNano())))
	c.seen = map[string]server.KeyValue{}
	for ctx.Err() == nil {
		key := c.keys[rng.IntN(len(c.keys))]
		c.seq++
		value := fmt.Sprintf("c%d-%d", c.id, c.seq)
		if !c.do(key, value, rng.IntN(100)) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (c *regClient) do(key, value string, dice int) bool {
	b := c.s.backend()
	if b == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	known, haveRev := c.seen[key]
	var in lin.Input
	var out lin.Output
	var err error
	call := c.hist.Now()
	switch {
	case dice < 40:
		in = lin.Input{Kind: lin.Get, Key: key}
		var kv *server.KeyValue
		if _, kv, err = b.Get(ctx, key, 0, false); err == nil {
			c.seen[key] = server.KeyValue{}
			if kv != nil {
				out.Value = string(kv.Value)
				c.seen[key] = *kv
			}
		}
	case dice < 55:
		in = lin.Input{Kind: lin.Put, Key: key, Value: value}
		var rev int64
		if rev, _, err = b.Put(ctx, key, []byte(value), 0); err == nil {
			c.seen[key] = server.KeyValue{Key: key, Value: []byte(value), ModRevision: rev}
		}
	case dice < 80 && haveRev && known.ModRevision != 0:
		in = lin.Input{Kind: lin.CAS, Key: key, Expect: string(known.Value), Value: value}
		var kv *server.KeyValue
		if _, kv, out.Succeeded, err = b.Update(ctx, key, []byte(value), known.ModRevision, 0); err == nil && out.Succeeded {
			c.seen[key] = *kv
		}
	case dice < 80:
		in = lin.Input{Kind: lin.CAS, Key: key, Expect: "", Value: value}
		var rev int64
		rev, err = b.Create(ctx, key, []byte(value), 0)
		switch {
		case err == nil:
			out.Succeeded = true
			c.seen[key] = server.KeyValue{Key: key, Value: []byte(value), ModRevision: rev}
		case errors.Is(err, server.ErrKeyExists):
			err = nil
		}
	default:
		in = lin.Input{Kind: lin.Delete, Key: key}
		if _, _, _, err = b.Delete(ctx, key, 0); err == nil {
			c.seen[key] = server.KeyValue{}
		}
	}
	ret := c.hist.Now()
	if err != nil {
		if in.Kind == lin.Get {
			return false // a failed read has no effect
		}
		delete(c.seen, key)
		c.unkno++
		out, ret = lin.Output{Unknown: true}, lin.UnknownReturn
	} else {
		c.ok++
	}
	c.hist.Add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret})
	return err == nil
}

// TestLinearizableUnderRestarts runs clients on every member while members
// — the leader half of the time — are stopped and restarted from their data,
// then checks the whole history with porcupine. DQLITE_LIN_SECONDS makes it
// longer.
func TestLinearizableUnderRestarts(t *testing.T) {
	seconds := 12
	if v, err := strconv.Atoi(os.Getenv("DQLITE_LIN_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	c := newTestCluster(t)
	c.form(3, func(cfg *Config) { cfg.SnapshotThreshold, cfg.SnapshotInterval = 256, 2*time.Second })
	slots := make([]*slot, 3)
	for i := range slots {
		slots[i] = &slot{n: c.nodes[i]}
	}
	hist := lin.NewHistory()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var clients []*regClient
	for i := range 6 {
		cl := &regClient{id: i, s: slots[i%3], hist: hist, keys: []string{"/r/a", "/r/b", "/r/c"}}
		clients = append(clients, cl)
		wg.Add(1)
		go func() { defer wg.Done(); cl.run(ctx) }()
	}
	faults := 0
	for ctx.Err() == nil {
		time.Sleep(1500 * time.Millisecond)
		victim := (c.leader() + faults%2) % 3 // leader, then a follower
		s := slots[victim]
		s.mu.Lock()
		s.n.Stop()
		s.n = nil
		s.mu.Unlock()
		c.nodes[victim] = nil
		time.Sleep(time.Second)
		n := c.start(c.cfgs[victim])
		s.mu.Lock()
		s.n = n
		s.mu.Unlock()
		c.nodes[victim] = n
		faults++
	}
	wg.Wait()
	ok, unknown := 0, 0
	for _, cl := range clients {
		ok, unknown = ok+cl.ok, unknown+cl.unkno
	}
	t.Logf("%d operations acknowledged, %d with unknown outcome, %d member restarts", ok, unknown, faults)
	if ok < 100 {
		t.Fatalf("only %d operations succeeded: the history proves little", ok)
	}
	if err := hist.Check(filepath.Join(os.TempDir(), fmt.Sprintf("dqlite-linearizability-%d", time.Now().Unix()))); err != nil {
		t.Fatal(err)
	}
}
