package dqlite

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/k3s-io/kine/pkg/server"
	"k8s.io/klog/v2"
)

// fsm is the Raft state machine: commands applied in log order to SQLite on
// every member, and the changes fed to that member's watchers straight from
// the apply, with no polling.
type fsm struct {
	mu sync.RWMutex // write-held only while the database is swapped or its meta updated
	st *store
	// applied is closed and replaced whenever the applied index moves.
	applied chan struct{}
	hub     hub
	// fatal is set when SQLite failed to apply a committed command: the
	// member's state can no longer be trusted and it must stop.
	fatal chan error
}

func newFSM(st *store) *fsm {
	return &fsm{st: st, applied: make(chan struct{}), fatal: make(chan error, 1)}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply runs one committed entry (Raft's RecoverCluster replays the log
// through it; the member itself calls ApplyBatch).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch runs a batch of committed entries in one SQLite transaction.
// Membership entries come here too (Raft calls StoreConfiguration only on an
// FSM that does not batch): they move the applied index, which a read index
// may be, and the index is stored with the rows, so that a snapshot taken
// right after one carries it and a member restored from it does not wait for
// an index it has passed. Each command's result is returned at its place,
// nil for a membership entry.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.mu.RLock()
	st := f.st
	f.mu.RUnlock()
	out, events, a, err := applyLogs(st, logs)
	if err == nil {
		f.published(logs[len(logs)-1].Index, a, events)
		return out
	}
	if len(logs) > 1 {
		// One transaction per entry, as if unbatched: the entries before the
		// failing one apply, and its error is its own.
		out = make([]any, len(logs))
		for i := range logs {
			out[i] = f.ApplyBatch(logs[i : i+1])[0]
		}
		return out
	}
	select {
	case f.fatal <- err:
	default:
	}
	return []any{&result{Err: err.Error()}}
}

// applyLogs applies logs in one transaction and commits it; it returns each
// entry's result and the watch events in log order.
func applyLogs(st *store, logs []*raft.Log) (out []any, events []*server.Event, a *applier, err error) {
	if a, err = st.begin(); err != nil {
		return nil, nil, nil, fmt.Errorf("applying Raft log entries %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	defer a.rollback()
	out = make([]any, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := unmarshalCommand(l.Data)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("applying Raft log entry %d: %w", l.Index, err)
		}
		res, evs, err := a.apply(c)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("applying Raft log entry %d: %w", l.Index, err)
		}
		out[i] = res
		events = append(events, evs...)
	}
	if err := a.commit(logs[len(logs)-1].Index); err != nil {
		return nil, nil, nil, fmt.Errorf("applying Raft log entries %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return out, events, a, nil
}

// published makes a committed batch visible: to readers and index waiters,
// then to watchers.
func (f *fsm) published(index uint64, a *applier, events []*server.Event) {
	f.mu.Lock()
	f.st.rev, f.st.compact, f.st.index = a.rev, a.compact, index
	close(f.applied)
	f.applied = make(chan struct{})
	f.mu.Unlock()
	if len(events) > 0 {
		f.hub.publish(server.EventBatch{Events: events, CurrentRev: a.rev})
	}
}

// waitApplied returns once the applied index reaches index.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		done, ch := f.st.index >= index, f.applied
		f.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read runs fn on the store at a stable moment: revision and rows agree.
func (f *fsm) read(fn func(st *store) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return fn(f.st)
}

// write runs fn on the store with applies and reads held off (a rewrite of
// the database).
func (f *fsm) write(fn func(st *store) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn(f.st)
}

// Snapshot copies the database; Raft then compacts its log up to here.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	path := f.st.path + ".snapshot"
	if err := f.st.snapshotTo(path); err != nil {
		return nil, fmt.Errorf("SQLite snapshot: %w", err)
	}
	return &snapshot{path: path}, nil
}

// Restore replaces the database with a snapshot's. Watchers are cut off:
// they cannot be fed the changes the snapshot skipped, so they must re-watch.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	path := f.st.path
	tmp := path + ".restore"
	if err := removeFiles(tmp); err != nil {
		return err
	}
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		out.Close()
		return fmt.Errorf("receiving snapshot: %w", err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := f.st.close(); err != nil {
		return err
	}
	if err := removeFiles(path); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	st, err := openStore(path)
	if err != nil {
		return err
	}
	f.st = st
	close(f.applied)
	f.applied = make(chan struct{})
	f.hub.closeAll()
	klog.Infof("dqlite: restored a snapshot at revision %d (log index %d)", st.rev, st.index)
	return nil
}

type snapshot struct{ path string }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	in, err := os.Open(s.path)
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	defer in.Close()
	if _, err := io.Copy(sink, in); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() { _ = os.Remove(s.path) }

// hub fans applied changes out to watchers.
type hub struct {
	mu   sync.Mutex
	subs map[chan server.EventBatch]struct{}
}

// subscribe returns a channel of every later batch; it is closed when the
// watcher falls too far behind or the store is replaced.
func (h *hub) subscribe() chan server.EventBatch {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[chan server.EventBatch]struct{}{}
	}
	ch := make(chan server.EventBatch, 1024)
	h.subs[ch] = struct{}{}
	return ch
}

func (h *hub) unsubscribe(ch chan server.EventBatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) publish(b server.EventBatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- b:
		default:
			// Never block the state machine on a slow watcher: cut it off.
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}
