package dqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/k3s-io/kine/pkg/server"
)

// newTestFSM is a state machine on a fresh database, without Raft.
func newTestFSM(t *testing.T) *fsm {
	t.Helper()
	st, err := openStore(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFSM(st)
	t.Cleanup(func() { _ = f.read(func(st *store) error { return st.close() }) })
	return f
}

// A snapshot taken right after a membership entry carries that entry's index:
// a member restored from it must not wait for an index it has passed.
func TestSnapshotCarriesMembershipIndex(t *testing.T) {
	src := newTestFSM(t)
	if res, ok := src.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: (&command{Op: opCreate, Key: "/a", Value: []byte("1")}).marshal()}).(*result); !ok || res.err() != nil {
		t.Fatalf("apply: %+v", res)
	}
	src.ApplyBatch([]*raft.Log{{Index: 6, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(raft.Configuration{})}})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	snaps := raft.NewInmemSnapshotStore()
	sink, err := snaps.Create(raft.SnapshotVersionMax, 6, 1, raft.Configuration{}, 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	_, rc, err := snaps.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	dst := newTestFSM(t)
	if err := dst.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if err := dst.read(func(st *store) error {
		if st.index != 6 || st.rev != 1 {
			t.Errorf("restored index %d revision %d, want 6 and 1", st.index, st.rev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func commandLog(index uint64, c command) *raft.Log {
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: c.marshal()}
}

// A batch of entries applies in one transaction with the results, events,
// revisions and index of applying its entries one at a time.
func TestApplyBatch(t *testing.T) {
	logs := []*raft.Log{
		commandLog(1, command{Op: opCreate, Key: "/a", Value: []byte("1")}),
		commandLog(2, command{Op: opCreate, Key: "/b", Value: []byte("1")}),
		commandLog(3, command{Op: opUpdate, Key: "/a", Value: []byte("2"), Rev: 1}),
		commandLog(4, command{Op: opCreate, Key: "/a", Value: []byte("x")}),
		commandLog(5, command{Op: opUpdate, Key: "/b", Value: []byte("x"), Rev: 1}),
		commandLog(6, command{Op: opBarrier}),
		{Index: 7, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(raft.Configuration{})},
		// At a revision the batch itself reached; then again, compacted.
		commandLog(8, command{Op: opCompact, Rev: 3}),
		commandLog(9, command{Op: opCompact, Rev: 3}),
		commandLog(10, command{Op: opPut, Key: "/b", Value: []byte("3")}),
		commandLog(11, command{Op: opDelete, Key: "/a"}),
		commandLog(12, command{Op: opCompact, Rev: 99}),
	}
	batch, single := newTestFSM(t), newTestFSM(t)
	batchSub, singleSub := batch.hub.subscribe(), single.hub.subscribe()
	got := batch.ApplyBatch(logs)
	var want []any
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			want = append(want, single.Apply(l))
		} else {
			want = append(want, single.ApplyBatch([]*raft.Log{l})[0])
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("batch results %s\nsingle %s", resultsString(got), resultsString(want))
	}
	// Not only alike: right.
	kv := func(key, value string, rev, create, version int64) *server.KeyValue {
		return &server.KeyValue{Key: key, Value: []byte(value), ModRevision: rev, CreateRevision: create, Version: version}
	}
	expect := []any{
		&result{Rev: 1, OK: true},
		&result{Rev: 2, OK: true},
		&result{Rev: 3, OK: true, KV: kv("/a", "2", 3, 1, 2)},
		&result{Rev: 3, KV: kv("/a", "2", 3, 1, 2)},
		&result{Rev: 3, KV: kv("/b", "1", 2, 2, 1)},
		&result{Rev: 3, OK: true},
		nil,
		&result{Rev: 3, OK: true},
		&result{Rev: 3, Err: errCompacted},
		&result{Rev: 4, OK: true, KV: kv("/b", "1", 2, 2, 1)},
		&result{Rev: 5, OK: true, KV: kv("/a", "2", 3, 1, 2)},
		&result{Rev: 5, Err: errFuture},
	}
	if !reflect.DeepEqual(got, expect) {
		t.Fatalf("batch results %s\nwant %s", resultsString(got), resultsString(expect))
	}
	// Watchers get the batch's events at once, in log order, as they get
	// the single entries' one by one.
	if len(batchSub) != 1 {
		t.Fatalf("%d event batches published, want 1", len(batchSub))
	}
	batchEv, singleEv := drain(batchSub), drain(singleSub)
	if !reflect.DeepEqual(batchEv, singleEv) || len(batchEv) != 5 {
		t.Fatalf("events:%s\nsingle:%s", eventsString(batchEv), eventsString(singleEv))
	}
	for i, e := range batchEv {
		if e.KV.ModRevision != int64(i+1) {
			t.Fatalf("event %d at revision %d:%s", i, e.KV.ModRevision, eventsString(batchEv))
		}
	}
	// The revision, compact revision and index, in memory and in the
	// database (what a snapshot carries).
	for _, f := range []*fsm{batch, single} {
		if err := f.waitApplied(ctxWithin(t, time.Second), 12); err != nil {
			t.Fatal(err)
		}
		if err := f.read(func(st *store) error {
			if st.rev != 5 || st.compact != 3 || st.index != 12 {
				t.Errorf("revision %d, compact %d, index %d; want 5, 3, 12", st.rev, st.compact, st.index)
			}
			stored, err := openStore(st.path)
			if err != nil {
				return err
			}
			defer stored.close()
			if stored.rev != 5 || stored.compact != 3 || stored.index != 12 {
				t.Errorf("stored revision %d, compact %d, index %d; want 5, 3, 12", stored.rev, stored.compact, stored.index)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var batchHist, singleHist []*server.Event
	_ = batch.read(func(st *store) (err error) { batchHist, err = st.events(context.Background(), 3, 100); return err })
	_ = single.read(func(st *store) (err error) { singleHist, err = st.events(context.Background(), 3, 100); return err })
	if len(batchHist) != 2 || !reflect.DeepEqual(batchHist, singleHist) {
		t.Fatalf("history after the compact revision:%s\nsingle:%s", eventsString(batchHist), eventsString(singleHist))
	}
}

// An entry that fails to apply fails alone, as it did one transaction per
// entry: the others apply, and the member learns that it must stop.
func TestApplyBatchFailure(t *testing.T) {
	f := newTestFSM(t)
	sub := f.hub.subscribe()
	out := f.ApplyBatch([]*raft.Log{
		commandLog(1, command{Op: opCreate, Key: "/a", Value: []byte("1")}),
		{Index: 2, Type: raft.LogCommand, Data: []byte{byte(opPut) + 1}},
		commandLog(3, command{Op: opCreate, Key: "/b", Value: []byte("1")}),
	})
	if len(out) != 3 {
		t.Fatalf("%d results for 3 entries", len(out))
	}
	first, failed, last := out[0].(*result), out[1].(*result), out[2].(*result)
	if !first.OK || first.Rev != 1 || !last.OK || last.Rev != 2 {
		t.Errorf("the entries around the failed one: %+v, %+v", first, last)
	}
	if !strings.Contains(failed.Err, "entry 2") || !strings.Contains(failed.Err, errCorrupt.Error()) {
		t.Errorf("failed entry's result %+v", failed)
	}
	select {
	case err := <-f.fatal:
		if !errors.Is(err, errCorrupt) {
			t.Errorf("fatal: %v", err)
		}
	default:
		t.Error("no fatal error")
	}
	if evs := drain(sub); len(evs) != 2 || evs[0].KV.Key != "/a" || evs[1].KV.Key != "/b" {
		t.Errorf("events:%s", eventsString(evs))
	}
	_ = f.read(func(st *store) error {
		if st.rev != 2 || st.index != 3 {
			t.Errorf("revision %d, index %d; want 2, 3", st.rev, st.index)
		}
		return nil
	})
}

func resultsString(rs []any) string {
	s := ""
	for _, r := range rs {
		if r, ok := r.(*result); ok && r != nil {
			s += fmt.Sprintf("\n  %+v", *r)
			if r.KV != nil {
				s += fmt.Sprintf(" %+v", *r.KV)
			}
			continue
		}
		s += "\n  nil"
	}
	return s
}
