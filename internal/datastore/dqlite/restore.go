package dqlite

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"

	"github.com/hakube/hakube/internal/datastore"
)

// Staged is a copy of a Dqlite snapshot (a SQLite file of the state), checked
// and ready to seed a new one-member cluster.
type Staged struct {
	path  string
	index uint64
}

// Stage copies the snapshot file beside the member's directory dir, checks it is
// an intact SQLite database holding Dqlite state, and moves its revision on by
// datastore.RestoreRevisionBump, compacted, as etcd mode's restore does. The
// member's directory is untouched.
func Stage(dir, snapshotPath string) (*Staged, error) {
	s := &Staged{path: dir + ".restoring.db"}
	if err := removeFiles(s.path); err != nil {
		return nil, err
	}
	if err := copyFile(snapshotPath, s.path); err != nil {
		return nil, err
	}
	st, err := openStore(s.path)
	if err == nil {
		var res string
		if err = st.db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err == nil && res != "ok" {
			err = fmt.Errorf("integrity check: %s", res)
		}
		if err == nil {
			err = st.bumpRevision(datastore.RestoreRevisionBump)
		}
		s.index = st.index
		if cerr := st.close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		s.Discard()
		return nil, fmt.Errorf("the Dqlite snapshot %s is not usable: %w", snapshotPath, err)
	}
	return s, nil
}

// Path is the staged file, for ComponentConfig.RestoreFrom.
func (s *Staged) Path() string { return s.path }

// Get reads the current value of key from the staged state.
func (s *Staged) Get(key string) ([]byte, bool, error) {
	st, err := openStore(s.path)
	if err != nil {
		return nil, false, err
	}
	defer st.close()
	r, err := st.latest(context.Background(), key, 0)
	if err != nil || r == nil || r.deleted {
		return nil, false, err
	}
	return r.value, true, nil
}

// Discard removes the staged copy.
func (s *Staged) Discard() { _ = removeFiles(s.path) }

// seed makes the staged state the first Raft snapshot of a new one-member
// cluster, at the log index the state was taken at, so that Raft starts
// from it as from any snapshot.
func seed(cfg Config, from string, snaps raft.SnapshotStore, stable raft.StableStore, trans raft.Transport) error {
	st, err := openStore(from)
	if err != nil {
		return err
	}
	index := max(st.index, 1)
	if err := st.close(); err != nil {
		return err
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: raft.ServerAddress(cfg.Advertise)}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return err
	}
	// The staged file is written into the sink as any snapshot of the state is.
	if err := (&snapshot{path: from}).Persist(sink); err != nil {
		return err
	}
	return stable.SetUint64([]byte("CurrentTerm"), 1)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
