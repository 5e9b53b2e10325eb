package etcd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/fsutil"
)

// Staged is a member restored from a snapshot into a directory beside the
// member's, not yet in place.
type Staged struct {
	dir    string
	target string
}

// Stage restores the etcd snapshot file (its own checksum verified) as a new
// one-member cluster of this server, in a directory beside the member's. The
// member's current data is untouched until Commit.
func Stage(cfg Config, snapshotPath string) (*Staged, error) {
	cfg.setDefaults()
	e := &Etcd{cfg: cfg}
	s := &Staged{dir: cfg.Dir + ".restoring", target: cfg.Dir}
	if err := os.RemoveAll(s.dir); err != nil {
		return nil, err
	}
	name := e.newName()
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                name,
		OutputDataDir:       s.dir,
		PeerURLs:            []string{e.peerURL()},
		InitialCluster:      name + "=" + e.peerURL(),
		InitialClusterToken: "hakube",
		RevisionBump:        datastore.RestoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		_ = os.RemoveAll(s.dir)
		return nil, fmt.Errorf("restoring the etcd snapshot %s: %w", snapshotPath, err)
	}
	if err := fsutil.WriteFile(filepath.Join(s.dir, "name"), []byte(name+"\n"), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

// Get reads the newest value of key from the staged data.
func (s *Staged) Get(key string) ([]byte, bool, error) {
	return readKey(filepath.Join(s.dir, "member", "snap", "db"), key)
}

// Commit puts the staged member in place; the member's directory must be
// free (moved aside by the caller).
func (s *Staged) Commit() error {
	if fsutil.Exists(s.target) {
		return fmt.Errorf("%s still exists; move it aside before restoring", s.target)
	}
	return os.Rename(s.dir, s.target)
}

// Discard removes the staged data.
func (s *Staged) Discard() { _ = os.RemoveAll(s.dir) }

// readKey scans etcd's backend file for the newest revision of key: the key
// bucket is ordered by revision, and a tombstone (revision with a trailing
// 't') deletes.
func readKey(dbPath, key string) (value []byte, found bool, err error) {
	db, err := bolt.Open(dbPath, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return nil, false, fmt.Errorf("opening %s: %w", dbPath, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return errors.New("not an etcd backend: it has no key bucket")
		}
		return b.ForEach(func(rev, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return err
			}
			if string(kv.Key) != key {
				return nil
			}
			tombstone := len(rev) == 18 && rev[17] == 't'
			value, found = append([]byte(nil), kv.Value...), !tombstone
			return nil
		})
	})
	return value, found, err
}
