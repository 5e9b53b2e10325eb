package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/pki"
)

// localDatastore is the embedded datastore member of the server whose data
// directory the CLI is given: etcd or Dqlite.
type localDatastore struct{ dataDir string }

func (l localDatastore) tlsDir() pki.Dir { return pki.Dir(filepath.Join(l.dataDir, "server", "tls")) }

// connect reaches the local etcd member with the server's client certificate.
func (l localDatastore) connect() (*clientv3.Client, error) {
	ep := etcd.LocalEndpoint(l.tlsDir(), 0)
	if _, err := os.Stat(ep.CertFile); err != nil {
		return nil, fmt.Errorf("no etcd client certificate in %s: is this a server on embedded etcd or Dqlite, and is --data-dir right?", l.tlsDir())
	}
	return datastore.Client(ep)
}

// dqliteClient reaches the local Dqlite member, if the server runs on Dqlite.
func (l localDatastore) dqliteClient() (*dqlite.Client, bool, error) {
	dbDir := filepath.Join(l.dataDir, "server", "db")
	if !dqlite.HasState(dqlite.Dir(dbDir)) {
		return nil, false, nil
	}
	c, err := dqlite.LocalClient(dbDir, l.tlsDir())
	return c, true, err
}

// members lists the cluster's members in etcd's terms, and the datastore kind.
func (l localDatastore) members(ctx context.Context) (datastore.Kind, []etcd.Member, error) {
	if dc, ok, err := l.dqliteClient(); ok {
		if err != nil {
			return datastore.Dqlite, nil, err
		}
		ms, err := dc.Members(ctx)
		out := make([]etcd.Member, 0, len(ms))
		for _, m := range ms {
			out = append(out, etcd.Member{Name: m.ID, PeerURLs: []string{"https://" + m.Address}, Learner: !m.Voter,
				Leader: m.Leader, Healthy: m.Healthy, RaftIndex: m.Applied, DBSize: m.DBSize, DBSizeUsed: m.DBSize - m.DBFree})
		}
		return datastore.Dqlite, out, err
	}
	cli, err := l.connect()
	if err != nil {
		return datastore.Etcd, nil, err
	}
	defer cli.Close()
	ms, err := etcd.Members(ctx, cli)
	return datastore.Etcd, ms, err
}
