package server

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"

	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/netutil"
)

// joiningDatastore is the embedded datastore of a server joining a cluster
// for the first time: etcd or Dqlite, whichever the cluster runs, which the
// join step learns from the bootstrap data before this component starts.
type joiningDatastore struct {
	nodeIP    net.IP
	etcd      *etcd.Etcd
	dqliteCfg dqlite.ComponentConfig
	chosen    datastore.Datastore
}

func (j *joiningDatastore) Name() string { return "datastore (the cluster's)" }

// Kind is etcd until the cluster's kind is known.
func (j *joiningDatastore) Kind() datastore.Kind {
	if j.chosen == nil {
		return datastore.Etcd
	}
	return j.chosen.Kind()
}

func (j *joiningDatastore) Endpoint() datastore.Endpoint { return j.chosen.Endpoint() }

// Init checks the peer ports of both kinds; the chosen one checks the rest.
func (j *joiningDatastore) Init(context.Context) error {
	if err := netutil.CheckPortFree(j.nodeIP.String(), etcd.DefaultPeerPort, "the etcd peer port"); err != nil {
		return err
	}
	return netutil.CheckPortFree(j.nodeIP.String(), dqlite.DefaultPeerPort, "the Dqlite peer port")
}

func (j *joiningDatastore) Start(ctx context.Context) error {
	if j.chosen == nil {
		return errors.New("the cluster's datastore kind is unknown: the join step did not run")
	}
	if err := j.chosen.Init(ctx); err != nil {
		return err
	}
	return j.chosen.Start(ctx)
}

func (j *joiningDatastore) Ready(ctx context.Context) error { return component.Ready(ctx, j.chosen) }

// Failed is the chosen datastore's.
func (j *joiningDatastore) Failed() <-chan error {
	if f, ok := j.chosen.(component.Failer); ok {
		return f.Failed()
	}
	return nil
}

func (j *joiningDatastore) Stop() error {
	if j.chosen == nil {
		return nil
	}
	return j.chosen.Stop()
}

// resume restarts this server's own member of kind from its data.
func (j *joiningDatastore) resume(kind datastore.Kind) {
	if kind == datastore.Dqlite {
		j.chosen = dqlite.New(j.dqliteCfg)
	} else {
		j.chosen = j.etcd
	}
}

// useEtcd joins an etcd cluster through its members' client URLs.
func (j *joiningDatastore) useEtcd(endpoints []string) {
	j.etcd.JoinVia(endpoints)
	j.chosen = j.etcd
}

// useDqlite joins a Dqlite cluster through a member's peer address.
func (j *joiningDatastore) useDqlite(peerAddr string) {
	cfg := j.dqliteCfg
	cfg.Join = peerAddr
	j.chosen = dqlite.New(cfg)
}

// embedded is the datastore behind ds: the chosen one of a joining server.
func embedded(ds datastore.Datastore) datastore.Datastore {
	if j, ok := ds.(*joiningDatastore); ok && j.chosen != nil {
		return j.chosen
	}
	return ds
}

// peerAddress turns a member's peer URL into host:port.
func peerAddress(peerURL string) (string, error) {
	u, err := url.Parse(peerURL)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), strconv.Itoa(dqlite.DefaultPeerPort)), nil
	}
	return u.Host, nil
}
