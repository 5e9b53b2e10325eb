package server

import (
	"context"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/kine"
	"github.com/hakube/hakube/internal/fsutil"
)

// copyPage is how many keys one read of the migration takes.
const copyPage = 500

// migrateSQLite copies every key of this server's SQLite datastore into the
// datastore at dst, then keeps the SQLite files as a backup. It is idempotent:
// after a crash it runs again from the start, since the SQLite file is only
// renamed once every key has been copied.
func migrateSQLite(ctx context.Context, serverDir string, dst datastore.Endpoint) error {
	dbPath := kine.DBPath(serverDir)
	if !fsutil.Exists(dbPath) {
		return nil
	}
	klog.Infof("migrate: copying the SQLite datastore %s into etcd", dbPath)
	src := kine.New(kine.Config{DataDir: serverDir})
	defer src.Stop()
	if err := src.Init(ctx); err != nil {
		return err
	}
	if err := src.Start(ctx); err != nil {
		return err
	}
	if err := src.Ready(ctx); err != nil {
		return err
	}
	from, err := datastore.Client(src.Endpoint())
	if err != nil {
		return err
	}
	defer from.Close()
	to, err := datastore.Client(dst)
	if err != nil {
		return err
	}
	defer to.Close()
	n, err := copyKeys(ctx, from, to, "/")
	if err != nil {
		return fmt.Errorf("migrating SQLite to etcd: %w", err)
	}
	if err := src.Stop(); err != nil {
		return err
	}
	suffix := ".migrated-" + time.Now().UTC().Format("20060102T150405Z")
	for _, f := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
		if fsutil.Exists(f) {
			if err := os.Rename(f, f+suffix); err != nil {
				return err
			}
		}
	}
	klog.Infof("migrate: copied %d keys from SQLite into etcd; the SQLite files are kept as %s", n, dbPath+suffix)
	return nil
}

// copyKeys copies every key under prefix from one etcd API endpoint to another,
// page by page at one revision, and checks the count at the end.
func copyKeys(ctx context.Context, from, to *clientv3.Client, prefix string) (int, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	start, rev, copied := prefix, int64(0), 0
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(copyPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := from.Get(ctx, start, opts...)
		if err != nil {
			return copied, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if _, err := to.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
				return copied, err
			}
			copied++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	got, err := to.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return copied, err
	}
	if got.Count < int64(copied) {
		return copied, fmt.Errorf("copied %d keys but the destination holds %d", copied, got.Count)
	}
	return copied, nil
}
