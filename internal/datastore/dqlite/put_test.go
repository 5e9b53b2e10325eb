package dqlite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/k3s-io/kine/pkg/server"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// testApplier feeds commands to a state machine as consecutive log entries.
type testApplier struct {
	t     *testing.T
	f     *fsm
	index uint64
}

func (a *testApplier) apply(c command) *result {
	a.t.Helper()
	a.index++
	res, ok := a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: c.marshal()}).(*result)
	if !ok || res.Err != "" {
		a.t.Fatalf("applying %+v: %+v", c, res)
	}
	return res
}

// drain returns the events published so far on sub.
func drain(sub chan server.EventBatch) []*server.Event {
	var out []*server.Event
	for {
		select {
		case b := <-sub:
			out = append(out, b.Events...)
		default:
			return out
		}
	}
}

// opPut leaves the same rows, events, revisions and previous values as
// kine's Put: a create, and when the key exists a read at the create's
// revision and an update on the mod revision read.
func TestPutMatchesKineSequence(t *testing.T) {
	put, seq := &testApplier{t: t, f: newTestFSM(t)}, &testApplier{t: t, f: newTestFSM(t)}
	putSub, seqSub := put.f.hub.subscribe(), seq.f.hub.subscribe()
	steps := []command{
		{Op: opPut, Key: "/a", Value: []byte("1")},              // absent: a create
		{Op: opPut, Key: "/a", Value: []byte("2"), Lease: 30},   // exists: an update
		{Op: opPut, Key: "/b", Value: []byte("b")},              // another key between
		{Op: opPut, Key: "/a", Value: []byte("3")},              // the lease dropped
		{Op: opDelete, Key: "/a"},                               // a tombstone
		{Op: opPut, Key: "/a", Value: []byte("4"), Lease: 60},   // created again after it
		{Op: opPut, Key: "/a", Value: []byte("4"), Lease: 60},   // the same value again
		{Op: opPut, Key: "/b", Value: nil},                      // an empty value
		{Op: opPut, Key: "/a/c", Value: []byte("c"), Lease: 10}, // a key under another
	}
	for i, c := range steps {
		if c.Op == opDelete {
			put.apply(c)
			seq.apply(c)
			continue
		}
		res := put.apply(c)
		if !res.OK {
			t.Fatalf("step %d: put not OK: %+v", i, res)
		}
		cr := seq.apply(command{Op: opCreate, Key: c.Key, Value: c.Value, Lease: c.Lease})
		rev := cr.Rev
		var prev *server.KeyValue
		if !cr.OK {
			if err := seq.f.read(func(st *store) error {
				r, err := st.latest(context.Background(), c.Key, cr.Rev)
				prev = r.kv()
				return err
			}); err != nil {
				t.Fatal(err)
			}
			ur := seq.apply(command{Op: opUpdate, Key: c.Key, Value: c.Value, Lease: c.Lease, Rev: prev.ModRevision})
			if !ur.OK {
				t.Fatalf("step %d: kine's update failed: %+v", i, ur)
			}
			rev = ur.Rev
		}
		if res.Rev != rev || !reflect.DeepEqual(res.KV, prev) {
			t.Fatalf("step %d: put gave revision %d, previous %+v; kine's sequence %d, %+v", i, res.Rev, res.KV, rev, prev)
		}
	}
	putEv, seqEv := drain(putSub), drain(seqSub)
	if len(putEv) != len(steps) || !reflect.DeepEqual(putEv, seqEv) {
		t.Fatalf("events differ:\nput: %s\nkine: %s", eventsString(putEv), eventsString(seqEv))
	}
	// Not only alike: right. The update carries the old value, the create
	// after the tombstone does not.
	if e := putEv[1]; e.Create || e.PrevKV == nil || string(e.PrevKV.Value) != "1" || e.KV.Version != 2 || e.KV.CreateRevision != 1 || e.KV.Lease != 30 {
		t.Errorf("update event %s", eventsString([]*server.Event{e}))
	}
	if e := putEv[5]; !e.Create || e.PrevKV != nil || e.KV.Version != 1 || e.KV.CreateRevision != 6 || e.KV.ModRevision != 6 {
		t.Errorf("create after delete: event %s", eventsString([]*server.Event{e}))
	}
	var putHist, seqHist []*server.Event
	for _, h := range []struct {
		f   *fsm
		out *[]*server.Event
	}{{put.f, &putHist}, {seq.f, &seqHist}} {
		if err := h.f.read(func(st *store) (err error) {
			*h.out, err = st.events(context.Background(), 0, 100)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(putHist, seqHist) || !reflect.DeepEqual(putHist, putEv) {
		t.Fatalf("stored history differs:\nput: %s\nkine: %s", eventsString(putHist), eventsString(seqHist))
	}
}

func eventsString(evs []*server.Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  %+v prev %+v create %v delete %v", *e.KV, e.PrevKV, e.Create, e.Delete)
	}
	return s
}

// etcdClient serves s on a unix socket and returns a client of it.
func etcdClient(t *testing.T, s *grpc.Server) *clientv3.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// The etcd API's Put, answered by putInterceptor with one Raft entry, answers
// and notifies watchers as kine's three do; what kine refuses or rewrites
// stays kine's.
func TestEtcdPutMatchesKine(t *testing.T) {
	type trace struct {
		resps  []proto.Message
		errs   []codes.Code
		events []*clientv3.Event
		writes [][]op // the writing entries (not barriers) each put of an existing key took
	}
	run := func(api func(*Backend) *grpc.Server) trace {
		c := newTestCluster(t)
		c.form(1, nil)
		c.leader()
		n := c.nodes[0]
		cli := etcdClient(t, api(n.Backend()))
		ctx := ctxT(t)
		var tr trace
		wch := cli.Watch(ctx, "/", clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV())
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		do := func(key, value string, opts ...clientv3.OpOption) *clientv3.PutResponse {
			t.Helper()
			before := n.raft.LastIndex()
			r, err := cli.Put(ctx, key, value, opts...)
			if err != nil {
				t.Fatalf("put %s: %v", key, err)
			}
			if r.PrevKv != nil {
				tr.writes = append(tr.writes, writeOps(t, n, before))
			}
			tr.resps = append(tr.resps, (*etcdserverpb.PutResponse)(r))
			return r
		}
		do("/a", "1", clientv3.WithPrevKV())
		do("/a", "2", clientv3.WithPrevKV(), clientv3.WithLease(lease.ID))
		last := do("/a", "3")
		del, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/a"), "=", last.Header.Revision)).
			Then(clientv3.OpDelete("/a")).Else(clientv3.OpGet("/a")).Commit()
		if err != nil || !del.Succeeded {
			t.Fatalf("delete: %+v %v", del, err)
		}
		do("/a", "4", clientv3.WithPrevKV())
		do("/b", "", clientv3.WithPrevKV())
		do("/b", "5", clientv3.WithPrevKV())
		// kine's own keys and refusals.
		do(compactRevKey, "c", clientv3.WithPrevKV())
		do(compactRevKey, "d", clientv3.WithPrevKV())
		for _, opt := range []clientv3.OpOption{clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease()} {
			_, err := cli.Put(ctx, "/a", "", opt)
			tr.errs = append(tr.errs, grpcstatus.Code(err))
		}
		final := do("/a", "6", clientv3.WithPrevKV())
		for len(tr.events) == 0 || tr.events[len(tr.events)-1].Kv.ModRevision < final.Header.Revision {
			wr, ok := <-wch
			if !ok || wr.Err() != nil {
				t.Fatalf("watch: %v", wr.Err())
			}
			tr.events = append(tr.events, wr.Events...)
		}
		return tr
	}
	ours := run(etcdAPI)
	kine := run(func(b *Backend) *grpc.Server {
		s := grpc.NewServer()
		server.New(b, "unix", 5*time.Second, "3.6.11").Register(s)
		return s
	})
	for i := range max(len(ours.resps), len(kine.resps)) {
		if i >= len(ours.resps) || i >= len(kine.resps) || !proto.Equal(ours.resps[i], kine.resps[i]) {
			t.Fatalf("put %d: responses differ:\nours %v\nkine %v", i, ours.resps, kine.resps)
		}
	}
	if !reflect.DeepEqual(ours.errs, kine.errs) || ours.errs[0] != codes.Unimplemented || ours.errs[1] != codes.Unimplemented {
		t.Errorf("refused puts: ours %v, kine %v", ours.errs, kine.errs)
	}
	if len(ours.events) != len(kine.events) {
		t.Fatalf("%d events, kine %d:\nours %v\nkine %v", len(ours.events), len(kine.events), ours.events, kine.events)
	}
	for i := range ours.events {
		o, k := ours.events[i], kine.events[i]
		if o.Type != k.Type || !proto.Equal(o.Kv, k.Kv) || !proto.Equal(o.PrevKv, k.PrevKv) {
			t.Errorf("event %d: ours %v, kine %v", i, o, k)
		}
	}
	// Puts of an existing key: one put each, the compact key's kine's
	// failed create and update (around a read barrier).
	put, seq := []op{opPut}, []op{opCreate, opUpdate}
	if want := [][]op{put, put, seq, put}; !reflect.DeepEqual(ours.writes, want) {
		t.Errorf("writes per put of an existing key: %v, want %v", ours.writes, want)
	}
	if want := [][]op{seq, seq, seq, seq}; !reflect.DeepEqual(kine.writes, want) {
		t.Errorf("kine's writes per put of an existing key: %v, want %v", kine.writes, want)
	}
}

// writeOps lists the ops of the log entries after index from, but for
// barriers (read barriers, and commit notices, which come with timing).
func writeOps(t *testing.T, n *Node, from uint64) []op {
	t.Helper()
	var ops []op
	for i := from + 1; i <= n.raft.LastIndex(); i++ {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := unmarshalCommand(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		if c.Op != opBarrier {
			ops = append(ops, c.Op)
		}
	}
	return ops
}

// A member that refuses a command as malformed (an older leader that does
// not know opPut) is told apart from other failures: nothing was done.
func TestRefusedCommand(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/apply" {
			http.Error(w, errCorrupt.Error(), http.StatusBadRequest)
			return
		}
		http.Error(w, "not the leader", statusNotLeader)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	err := callRPC(ctxT(t), srv.Client(), addr, "POST", "/apply", (&command{Op: opPut}).marshal(), nil)
	if !errors.Is(err, errRefused) || errors.Is(err, errNoLeaderYet) {
		t.Errorf("a refused command: %v", err)
	}
	if err := callRPC(ctxT(t), srv.Client(), addr, "GET", "/readindex", nil, nil); errors.Is(err, errRefused) || !errors.Is(err, errNoLeaderYet) {
		t.Errorf("not the leader: %v", err)
	}
}

// Put's fallback for an older leader answers as Put does.
func TestPutInSteps(t *testing.T) {
	c := newTestCluster(t)
	c.form(1, nil)
	c.leader()
	b := c.nodes[0].Backend()
	ctx := ctxT(t)
	for _, k := range []string{"/put", "/steps"} {
		put := b.Put
		if k == "/steps" {
			put = b.putInSteps
		}
		var got []string
		for i, v := range []string{"1", "2", "", "3"} {
			if v == "" {
				if _, _, ok, err := b.Delete(ctx, k, 0); err != nil || !ok {
					t.Fatalf("delete: %v", err)
				}
				continue
			}
			rev, prev, err := put(ctx, k, []byte(v), int64(i))
			if err != nil {
				t.Fatal(err)
			}
			_, kv, err := b.Get(ctx, k, 0, false)
			if err != nil || kv == nil || kv.ModRevision != rev || string(kv.Value) != v || kv.Lease != int64(i) {
				t.Fatalf("%s after put %d at revision %d: %+v %v", k, i, rev, kv, err)
			}
			p := "none"
			if prev != nil {
				p = fmt.Sprintf("%s version %d", prev.Value, prev.Version)
			}
			got = append(got, fmt.Sprintf("version %d, previous %s", kv.Version, p))
		}
		if want := []string{"version 1, previous none", "version 2, previous 1 version 1", "version 1, previous none"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}
