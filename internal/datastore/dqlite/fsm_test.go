package dqlite

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
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
	src.StoreConfiguration(6, raft.Configuration{})
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
