package dqlite

import (
	"context"
	"errors"

	"github.com/k3s-io/kine/pkg/server"
)

// Backend is kine's server.Backend over a member: kine's etcd API server
// translates the apiserver's requests into these calls.
type Backend struct{ n *Node }

var _ server.Backend = (*Backend)(nil)

// Backend returns the member's kine backend.
func (n *Node) Backend() *Backend { return &Backend{n: n} }

// Start is a no-op: the member is already running.
func (b *Backend) Start(context.Context) error { return nil }

// at checks a read revision against the store after linearizing: 0 means
// the current revision.
func (b *Backend) at(ctx context.Context, revision int64, fn func(st *store, rev int64) error) (int64, error) {
	if err := b.n.linearize(ctx); err != nil {
		return 0, err
	}
	var cur int64
	err := b.n.fsm.read(func(st *store) error {
		cur = st.rev
		rev := revision
		switch {
		case rev <= 0:
			rev = cur
		case rev > cur:
			return server.ErrFutureRev
		case rev < st.compact:
			return server.ErrCompacted
		}
		return fn(st, rev)
	})
	return cur, err
}

func (b *Backend) Get(ctx context.Context, key string, revision int64, keysOnly bool) (int64, *server.KeyValue, error) {
	var kv *server.KeyValue
	rev, err := b.at(ctx, revision, func(st *store, rev int64) error {
		r, err := st.latest(ctx, key, rev)
		if err != nil || r == nil || r.deleted {
			return err
		}
		kv = r.kv()
		if keysOnly {
			kv.Value = nil
		}
		return nil
	})
	return rev, kv, err
}

func (b *Backend) List(ctx context.Context, key, end string, limit, revision int64, keysOnly bool) (int64, []*server.KeyValue, error) {
	var kvs []*server.KeyValue
	rev, err := b.at(ctx, revision, func(st *store, rev int64) (err error) {
		kvs, err = st.list(ctx, key, end, limit, rev, keysOnly)
		return err
	})
	return rev, kvs, err
}

func (b *Backend) ListStream(ctx context.Context, key, end string, limit, revision int64, keysOnly bool) server.ListResult {
	rev, kvs, err := b.List(ctx, key, end, limit, revision, keysOnly)
	kvc := make(chan *server.KeyValue, len(kvs))
	errc := make(chan error, 1)
	for _, kv := range kvs {
		kvc <- kv
	}
	close(kvc)
	if err != nil {
		errc <- err
	}
	close(errc)
	return server.ListResult{CurrentRevision: rev, KVc: kvc, Errorc: errc}
}

func (b *Backend) Count(ctx context.Context, key, end string, revision int64) (int64, int64, error) {
	var n int64
	rev, err := b.at(ctx, revision, func(st *store, rev int64) (err error) {
		n, err = st.count(ctx, key, end, rev)
		return err
	})
	return rev, n, err
}

func (b *Backend) CurrentRevision(ctx context.Context) (int64, error) {
	return b.at(ctx, 0, func(*store, int64) error { return nil })
}

func (b *Backend) Create(ctx context.Context, key string, value []byte, lease int64) (int64, error) {
	res, err := b.n.apply(ctx, &command{Op: opCreate, Key: key, Value: value, Lease: lease})
	if err != nil {
		return 0, err
	}
	if !res.OK {
		return res.Rev, server.ErrKeyExists
	}
	return res.Rev, nil
}

func (b *Backend) Update(ctx context.Context, key string, value []byte, revision, lease int64) (int64, *server.KeyValue, bool, error) {
	res, err := b.n.apply(ctx, &command{Op: opUpdate, Key: key, Value: value, Lease: lease, Rev: revision})
	if err != nil {
		return 0, nil, false, err
	}
	return res.Rev, res.KV, res.OK, nil
}

// Put writes key whatever its state, in one Raft entry; prev is the value it
// replaced (nil: the key was absent). kine's Put, which the etcd API server
// would run instead (putInterceptor), takes three: a create that fails on an
// existing key, a linearizable read and an update.
func (b *Backend) Put(ctx context.Context, key string, value []byte, lease int64) (rev int64, prev *server.KeyValue, err error) {
	if !b.n.putOK.Load() {
		return b.putInSteps(ctx, key, value, lease)
	}
	res, err := b.n.apply(ctx, &command{Op: opPut, Key: key, Value: value, Lease: lease})
	if errors.Is(err, errRefused) {
		// A leader of an older version (a rolling upgrade) does not know
		// opPut; without this, a newer server could not write its start
		// report, so could not start, until the leader was upgraded too.
		return b.putInSteps(ctx, key, value, lease)
	}
	if err != nil {
		return 0, nil, err
	}
	return res.Rev, res.KV, nil
}

// putInSteps is Put with the older commands: a create, or a read and an
// update on the mod revision read, again until one of them takes.
func (b *Backend) putInSteps(ctx context.Context, key string, value []byte, lease int64) (int64, *server.KeyValue, error) {
	for {
		rev, err := b.Create(ctx, key, value, lease)
		if !errors.Is(err, server.ErrKeyExists) {
			return rev, nil, err
		}
		_, prev, err := b.Get(ctx, key, 0, false)
		if err != nil {
			return 0, nil, err
		}
		if prev == nil {
			continue // deleted since
		}
		rev, _, ok, err := b.Update(ctx, key, value, prev.ModRevision, lease)
		if err != nil || ok {
			return rev, prev, err
		}
	}
}

func (b *Backend) Delete(ctx context.Context, key string, revision int64) (int64, *server.KeyValue, bool, error) {
	res, err := b.n.apply(ctx, &command{Op: opDelete, Key: key, Rev: revision})
	if err != nil {
		return 0, nil, false, err
	}
	return res.Rev, res.KV, res.OK, nil
}

// compactStep bounds the revisions one compaction entry removes: the state
// machine applies entries one at a time, so writes wait for each. Compacting
// 20,000 revisions at once stalled writes for 92 ms (bench); a step of 2,000
// lets writes in between.
const compactStep = 2000

// Compact removes the history up to revision in steps of compactStep.
func (b *Backend) Compact(ctx context.Context, revision int64) (int64, error) {
	var from int64
	_ = b.n.fsm.read(func(st *store) error { from = st.compact; return nil })
	// Steps below a compaction that another member ran meanwhile are refused
	// as compacted, which is fine: the last step decides.
	for step := from + compactStep; step < revision; step += compactStep {
		if _, err := b.n.apply(ctx, &command{Op: opCompact, Rev: step}); err != nil && !errors.Is(err, server.ErrCompacted) {
			return 0, err
		}
	}
	res, err := b.n.apply(ctx, &command{Op: opCompact, Rev: revision})
	if err != nil && !errors.Is(err, server.ErrCompacted) {
		return 0, err
	}
	return res.Rev, err
}

func (b *Backend) DbSize(ctx context.Context) (int64, error) {
	var size int64
	err := b.n.fsm.read(func(st *store) (err error) {
		size, _, err = st.size(ctx)
		return err
	})
	return size, err
}

// Watch streams every change after revision-1 (kine asks for the changes
// from revision on), first from the stored history, then as they are applied.
func (b *Backend) Watch(ctx context.Context, revision int64) server.WatchResult {
	eventc := make(chan server.EventBatch, 100)
	errc := make(chan error, 1)
	// Subscribe before reading the history so nothing falls in between.
	sub := b.n.fsm.hub.subscribe()
	var cur, compact int64
	_ = b.n.fsm.read(func(st *store) error { cur, compact = st.rev, st.compact; return nil })
	wr := server.WatchResult{CurrentRevision: cur, Eventc: eventc, Errorc: errc}
	after := cur
	if revision > 0 {
		after = revision - 1
	}
	if revision > 0 && after < compact {
		b.n.fsm.hub.unsubscribe(sub)
		wr.CompactRevision = compact
		close(eventc)
		close(errc)
		return wr
	}
	go func() {
		defer close(errc)
		defer close(eventc)
		defer b.n.fsm.hub.unsubscribe(sub)
		send := func(batch server.EventBatch) bool {
			batch = batch.After(after)
			if len(batch.Events) == 0 {
				return true
			}
			after = batch.Events[len(batch.Events)-1].KV.ModRevision
			select {
			case eventc <- batch:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// History up to the revision at subscription, in pages.
		for after < cur {
			var events []*server.Event
			err := b.n.fsm.read(func(st *store) (err error) {
				events, err = st.events(ctx, after, 500)
				return err
			})
			if err != nil {
				errc <- err
				return
			}
			if len(events) == 0 {
				break
			}
			if !send(server.EventBatch{Events: events, CurrentRev: events[len(events)-1].KV.ModRevision}) {
				return
			}
		}
		for {
			select {
			case batch, ok := <-sub:
				if !ok {
					// Cut off (too slow, or the store was replaced): the
					// client re-watches from its last revision.
					errc <- errors.New("dqlite: watch cut off, re-watch")
					return
				}
				if !send(batch) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return wr
}
