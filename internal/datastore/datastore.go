// Package datastore is the one seam between the control plane and where its state
// lives. Every datastore, embedded or external, ends up as an etcd v3 API endpoint
// plus the TLS files to reach it; the control plane never knows which kind it got.
package datastore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hakube/hakube/internal/component"
)

// Kind names a datastore implementation.
type Kind string

// RestoreRevisionBump moves the revision of a datastore restored from a
// snapshot past any the old cluster could have reached, and the restore marks
// it compacted: clients holding newer resource versions get "too old" and
// relist, instead of waiting for a revision the restored data will reach with
// other contents.
const RestoreRevisionBump = 1_000_000_000

// Datastore kinds.
const (
	SQLite       Kind = "sqlite"
	Etcd         Kind = "etcd"
	ExternalSQL  Kind = "external-sql"
	ExternalEtcd Kind = "external-etcd"
	Dqlite       Kind = "dqlite"
)

// Clustered reports whether the kind is an embedded datastore that servers
// replicate among themselves (etcd, Dqlite): such a server holds the cluster's
// CAs before its member starts, takes snapshots and serves metrics.
func (k Kind) Clustered() bool { return k == Etcd || k == Dqlite }

// Endpoint is how to reach a datastore through the etcd v3 API.
type Endpoint struct {
	URLs []string
	// TLS client files; empty when the endpoint needs no TLS (a private unix socket).
	CAFile, CertFile, KeyFile string
}

// Datastore is a component that serves the etcd v3 API.
type Datastore interface {
	component.Component
	Kind() Kind
	// Endpoint is valid once the datastore is ready.
	Endpoint() Endpoint
}

// Member is one member of a clustered datastore, with what it reports of
// itself. The JSON is what 'hakube etcd member list -o json' prints.
type Member struct {
	Name string `json:"name"`
	// ID is etcd's member ID in hex (empty on Dqlite, whose members are named).
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
	Healthy    bool     `json:"healthy"`
	RaftIndex  uint64   `json:"raftIndex"`
	DBSize     int64    `json:"dbSize"`
	DBSizeUsed int64    `json:"dbSizeInUse"`
	Error      string   `json:"error,omitempty"`
}

// Membership is the membership of a clustered datastore, as one of its
// members (or a client on its server) sees it.
type Membership interface {
	// Members lists the members, asking each for its status.
	Members(ctx context.Context) ([]Member, error)
	// RemoveMember removes the member called name (etcd also takes its ID),
	// refusing when the healthy voters left would not form a quorum.
	RemoveMember(ctx context.Context, name string) (Member, error)
}

// NoSpaceReporter is a datastore that can run out of space and recover
// when its server restarts (embedded etcd's quota).
type NoSpaceReporter interface {
	// NoSpace reports whether the datastore is, or just was, out of space.
	NoSpace() bool
}

// Client returns an etcd client for ep. The caller closes it.
func Client(ep Endpoint) (*clientv3.Client, error) {
	var tlsCfg *tls.Config
	if ep.CertFile != "" || ep.CAFile != "" {
		info := transport.TLSInfo{TrustedCAFile: ep.CAFile, CertFile: ep.CertFile, KeyFile: ep.KeyFile}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("datastore TLS: %w", err)
		}
		tlsCfg = c
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   ep.URLs,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// DialAny returns nil once a TCP connection to one of addrs (host:port) opens,
// else the errors of all of them. It checks an address before anything is written.
func DialAny(ctx context.Context, addrs ...string) error {
	var errs []error
	for _, a := range addrs {
		conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", a)
		if err == nil {
			return conn.Close()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WaitReachable polls ep until a read succeeds, ctx ends, or timeout passes.
func WaitReachable(ctx context.Context, ep Endpoint, timeout time.Duration) error {
	cli, err := Client(ep)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, last = cli.Get(rctx, "/hakube/ping", clientv3.WithCountOnly())
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("datastore at %v did not answer within %s: %w", ep.URLs, timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
