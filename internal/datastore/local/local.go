// Package local reaches the embedded datastore member of the server whose data
// directory it is given (etcd or Dqlite), as the CLI and the snapshot
// scheduler do, and the etcd API of any datastore the server serves locally.
package local

import (
	"context"
	"fmt"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/layout"
)

// Datastore is the embedded datastore member of the server whose data
// directory this is: etcd or Dqlite.
type Datastore struct{ layout.Layout }

// Connect reaches the local etcd member with the server's client certificate.
func (l Datastore) Connect() (*clientv3.Client, error) {
	ep := etcd.LocalEndpoint(l.TLS(), 0)
	if _, err := os.Stat(ep.CertFile); err != nil {
		return nil, fmt.Errorf("no etcd client certificate in %s: is this a server on embedded etcd or Dqlite, and is --data-dir right?", l.TLS())
	}
	return datastore.Client(ep)
}

// DqliteClient reaches the local Dqlite member, if the server runs on Dqlite.
func (l Datastore) DqliteClient() (*dqlite.Client, bool, error) {
	if !dqlite.HasState(l.Dqlite()) {
		return nil, false, nil
	}
	c, err := dqlite.LocalClient(l.Dqlite(), l.TLS())
	return c, true, err
}

// Membership reaches the membership of the local member's cluster, and
// says which kind it is; close releases it.
func (l Datastore) Membership() (kind datastore.Kind, m datastore.Membership, close func(), err error) {
	if dc, ok, err := l.DqliteClient(); ok {
		return datastore.Dqlite, dc, func() {}, err
	}
	cli, err := l.Connect()
	if err != nil {
		return datastore.Etcd, nil, nil, err
	}
	return datastore.Etcd, etcd.Membership{Client: cli}, func() { cli.Close() }, nil
}

// Members lists the cluster's members, and the datastore kind.
func (l Datastore) Members(ctx context.Context) (datastore.Kind, []datastore.Member, error) {
	kind, m, close, err := l.Membership()
	if err != nil {
		return kind, nil, err
	}
	defer close()
	ms, err := m.Members(ctx)
	return kind, ms, err
}

// KV reaches the etcd API this server's apiserver uses, on any datastore
// served locally: the etcd member with the client certificate, Dqlite's or
// kine's private socket (SQLite, postgres, mysql). An external etcd has none.
func (l Datastore) KV() (*clientv3.Client, error) {
	switch {
	case etcd.HasData(l.Etcd()):
		return l.Connect()
	case dqlite.HasState(l.Dqlite()):
		return datastore.Client(datastore.Endpoint{URLs: []string{"unix://" + l.DqliteSocket()}})
	}
	if _, err := os.Stat(l.KineSocket()); err != nil {
		return nil, fmt.Errorf("no local datastore in %s (no etcd or Dqlite data, no %s): is the server running, and is --data-dir right? "+
			"On an external etcd, read it with etcdctl", l.DataDir(), l.KineSocket())
	}
	return datastore.Client(datastore.Endpoint{URLs: []string{"unix://" + l.KineSocket()}})
}
