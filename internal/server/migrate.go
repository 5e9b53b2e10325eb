package server

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/layout"
)

// copyPage is how many keys one read of the migration takes.
const copyPage = 500

// localKinds lists the embedded datastores that have data on this server.
func localKinds(l layout.Layout) []datastore.Kind {
	var kinds []datastore.Kind
	if fsutil.Exists(l.SQLite()) {
		kinds = append(kinds, datastore.SQLite)
	}
	if etcd.HasData(l.Etcd()) {
		kinds = append(kinds, datastore.Etcd)
	}
	if dqlite.HasState(l.Dqlite()) {
		kinds = append(kinds, datastore.Dqlite)
	}
	return kinds
}

// dataPaths are the files and directories that hold this server's data of
// an embedded datastore kind.
func dataPaths(l layout.Layout, k datastore.Kind) []string {
	switch k {
	case datastore.Etcd:
		return []string{l.Etcd()}
	case datastore.Dqlite:
		return []string{l.Dqlite()}
	case datastore.SQLite:
		return l.SQLiteFiles()
	}
	return nil
}

// planDatastore picks the embedded datastore a server that is not joining
// runs on, and the kind whose local data must first move into it ("" if none).
// An explicit --datastore wins over the data found; without it a server keeps
// its kind, except that --cluster-init moves SQLite data to etcd.
func planDatastore(cfg Config, have []datastore.Kind) (target, source datastore.Kind, err error) {
	if cfg.Datastore == "" {
		switch {
		case len(have) == 2 && have[0] == datastore.SQLite && have[1] == datastore.Etcd && cfg.ClusterInit:
			// The one move --cluster-init makes alone, interrupted.
			target = datastore.Etcd
		case len(have) > 1:
			return "", "", fmt.Errorf("this server has data of %s: a move between datastores was interrupted; "+
				"start it again with the --datastore it was moving to, to finish the move", kindList(have))
		case len(have) == 1 && !(have[0] == datastore.SQLite && cfg.ClusterInit):
			return have[0], "", nil
		case cfg.ClusterInit:
			target = datastore.Etcd
		default:
			target = datastore.SQLite
		}
	} else {
		target = datastore.Kind(cfg.Datastore)
	}
	others := slices.DeleteFunc(slices.Clone(have), func(k datastore.Kind) bool { return k == target })
	if len(others) > 1 {
		return "", "", fmt.Errorf("this server has data of %s: move all but one of them away before moving to %s", kindList(others), target)
	}
	if len(others) == 1 {
		source = others[0]
	}
	return target, source, nil
}

func kindList(kinds []datastore.Kind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, " and ")
}

// migration moves the data of this server's datastore of another kind into
// the one it now runs on. A clustered source is first made the only member of
// its cluster, so that no other server can commit a write the copy would miss;
// the removed servers stop and rejoin with --server. The source's files are
// then kept as a backup under a new name. After a crash the migration runs
// again from the start: the source is only renamed once every key is copied.
type migration struct {
	kind datastore.Kind
	from datastore.Datastore
	// self is the source's member name in its cluster.
	self string
	// files are renamed with a suffix once the copy is done.
	files []string
}

func (m *migration) run(ctx context.Context, to datastore.Datastore) error {
	klog.Infof("migrate: moving this server's %s data into %s", m.kind, to.Kind())
	stopped := false
	defer func() {
		if !stopped {
			_ = m.from.Stop()
		}
	}()
	if err := m.from.Init(ctx); err != nil {
		return err
	}
	if err := m.from.Start(ctx); err != nil {
		return err
	}
	if err := component.Ready(ctx, m.from); err != nil {
		return err
	}
	if err := m.removeOthers(ctx); err != nil {
		return err
	}
	// A removal may leave the source without a leader for an election.
	if err := datastore.WaitReachable(ctx, m.from.Endpoint(), time.Minute); err != nil {
		return err
	}
	src, err := datastore.Client(m.from.Endpoint())
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := datastore.Client(to.Endpoint())
	if err != nil {
		return err
	}
	defer dst.Close()
	n, err := copyKeys(ctx, src, dst, "/", m.kind != datastore.Etcd)
	if err != nil {
		return fmt.Errorf("migrating %s to %s: %w", m.kind, to.Kind(), err)
	}
	stopped = true
	if err := m.from.Stop(); err != nil {
		return err
	}
	suffix := ".migrated-" + time.Now().UTC().Format("20060102T150405Z")
	for _, f := range m.files {
		if fsutil.Exists(f) {
			if err := os.Rename(f, f+suffix); err != nil {
				return err
			}
		}
	}
	klog.Infof("migrate: copied %d keys from %s into %s; the %s data is kept as %s", n, m.kind, to.Kind(), m.kind, m.files[0]+suffix)
	return nil
}

// removeOthers removes every other member of the source's cluster, members
// that are down first, so that each removal keeps a quorum of healthy voters.
func (m *migration) removeOthers(ctx context.Context) error {
	ms, ok := m.from.(datastore.Membership)
	if !ok {
		return nil
	}
	// list names every member, those that are down first.
	list := func(ctx context.Context) ([]string, error) {
		all, err := ms.Members(ctx)
		var up, down []string
		for _, mem := range all {
			if mem.Healthy {
				up = append(up, mem.Name)
			} else {
				down = append(down, mem.Name)
			}
		}
		return append(down, up...), err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		all, err := list(ctx)
		if err == nil {
			others := slices.DeleteFunc(all, func(n string) bool { return n == m.self })
			if len(others) == 0 {
				return nil
			}
			klog.Infof("migrate: removing the other members of the %s cluster (%s) so that no write can be missed; "+
				"they stop, and rejoin this server when started with --server", m.kind, strings.Join(others, ", "))
			for _, name := range others {
				if _, err = ms.RemoveMember(ctx, name); err != nil {
					break
				}
				klog.Infof("migrate: removed %s", name)
			}
		}
		if err != nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("migrate: cannot make this server the only member of its %s cluster: %w", m.kind, err)
			}
			klog.Infof("migrate: %v; retrying", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// copyKeys copies every key under prefix from one etcd API endpoint to another,
// page by page at one revision, and checks the count at the end. Keys with a
// lease get a lease of their TTL in the destination; leaseIsTTL says that the
// source's lease IDs are their TTLs in seconds (kine's convention, which the
// Dqlite datastore keeps), else the source is asked for the time left.
func copyKeys(ctx context.Context, from, to *clientv3.Client, prefix string, leaseIsTTL bool) (int, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	leases := map[int64]clientv3.LeaseID{}
	lease := func(id int64) (clientv3.LeaseID, error) {
		if l, ok := leases[id]; ok {
			return l, nil
		}
		ttl := id
		if !leaseIsTTL {
			resp, err := from.TimeToLive(ctx, clientv3.LeaseID(id))
			if err != nil {
				return 0, err
			}
			ttl = max(resp.TTL, 1)
		}
		g, err := to.Grant(ctx, ttl)
		if err != nil {
			return 0, err
		}
		leases[id] = g.ID
		return g.ID, nil
	}
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
			var putOpts []clientv3.OpOption
			if kv.Lease != 0 {
				l, err := lease(kv.Lease)
				if err != nil {
					return copied, fmt.Errorf("lease of %s: %w", kv.Key, err)
				}
				putOpts = append(putOpts, clientv3.WithLease(l))
			}
			if _, err := to.Put(ctx, string(kv.Key), string(kv.Value), putOpts...); err != nil {
				return copied, err
			}
			copied++
		}
		if copied%(20*copyPage) == 0 && copied > 0 {
			klog.Infof("migrate: %d keys copied so far", copied)
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
