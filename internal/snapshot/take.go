package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/datastore/local"
)

// Take streams a snapshot of the local member (etcd or Dqlite) of the server
// l into dir, named prefix-<member>-<time>.
func Take(ctx context.Context, l local.Datastore, dir Dir, prefix string, compress bool) (Meta, error) {
	var r io.ReadCloser
	m := Meta{Created: time.Now().UTC()}
	if dc, ok, err := l.DqliteClient(); ok {
		if err != nil {
			return m, err
		}
		if m.Node, err = dc.ID(ctx); err != nil {
			return m, err
		}
		if r, err = dc.Snapshot(ctx); err != nil {
			return m, err
		}
		m.Datastore = string(datastore.Dqlite)
	} else {
		cli, err := l.Connect()
		if err != nil {
			return m, errors.New("snapshots are taken of an embedded etcd or Dqlite member; this server has neither (a single SQLite server: " +
				"copy <data-dir>/server/db/state.db while it is stopped, or move it to etcd with --cluster-init)")
		}
		defer cli.Close()
		if m.Node, err = etcdSelf(ctx, cli, l); err != nil {
			return m, err
		}
		if r, err = cli.Snapshot(ctx); err != nil {
			return m, err
		}
		m.Datastore = string(datastore.Etcd)
	}
	defer r.Close()
	m.Name = Name(prefix, m.Node, m.Created)
	return dir.Save(m, r, compress)
}

// etcdSelf is the local member's name; a learner is refused: it may miss
// entries the cluster committed.
func etcdSelf(ctx context.Context, cli *clientv3.Client, l local.Datastore) (string, error) {
	name := etcd.MemberName(l.Etcd())
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range resp.Members {
		if m.Name == name && m.IsLearner {
			return "", fmt.Errorf("member %s is a learner (still catching up) and may miss committed entries: take the snapshot on a voter", name)
		}
	}
	return name, nil
}
