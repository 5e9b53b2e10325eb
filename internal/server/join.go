package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
)

// joinCluster fetches the cluster's shared material through another server
// before the local datastore member starts, and points the member at the
// cluster. A server restarting from its own data only checks that it is still
// a member (moving its data aside to rejoin if it was removed, or if the
// cluster moved to another datastore); if the other server is down it starts
// from local data, so a full cold restart needs no server first.
type joinCluster struct {
	client   *join.Client
	layout   layout.Layout
	nodeName string
	critical bootstrap.Critical
	target   *joiningDatastore
}

func (j *joinCluster) Name() string               { return "join via " + j.client.URL }
func (j *joinCluster) Init(context.Context) error { return nil }
func (j *joinCluster) Stop() error                { return nil }

func (j *joinCluster) Start(ctx context.Context) error {
	_, err := j.layout.TLS().ReadShared()
	if kind, name := j.localMember(); kind != "" && err == nil {
		return j.checkStillMember(ctx, kind, name)
	}
	if err := j.verifyCA(ctx, 5*time.Minute); err != nil {
		return err
	}
	return j.join(ctx)
}

// verifyCA waits for the server to answer (it may be starting too), then
// verifies its CA against the token.
func (j *joinCluster) verifyCA(ctx context.Context, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		err := j.client.VerifyCA(ctx)
		if err == nil {
			if j.client.Token.CAHash != "" {
				klog.Infof("join: CA of %s verified against the token's hash", j.client.URL)
			} else {
				klog.Infof("join: CA of %s verified: the server proved it knows the token", j.client.URL)
			}
			return nil
		}
		if !errors.Is(err, join.ErrUnreachable) || time.Now().After(deadline) {
			return err
		}
		klog.Infof("join: %v; retrying", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}

func (j *joinCluster) join(ctx context.Context) error {
	data, err := j.client.Bootstrap(ctx)
	if err != nil {
		return err
	}
	switch kind := datastore.Kind(data.Critical.Datastore); kind {
	case datastore.SQLite:
		return fmt.Errorf("the server at %s runs on a single-server SQLite datastore, which other servers cannot join; "+
			"restart it with --cluster-init to move its data to etcd, then join it", j.client.URL)
	case datastore.Etcd, datastore.Dqlite:
	default:
		return fmt.Errorf("the server at %s runs on an external datastore (%s): start this server with the same --datastore-endpoint instead of --server", j.client.URL, kind)
	}
	// A joining server takes the cluster's embedded datastore, whichever it is.
	mine := j.critical
	mine.Datastore = data.Critical.Datastore
	if m := mine.Mismatches(data.Critical); len(m) > 0 {
		return bootstrap.MismatchError(m)
	}
	if _, err := j.layout.TLS().WriteShared(data.Files); err != nil {
		return fmt.Errorf("writing the cluster's CAs: %w", err)
	}
	klog.Infof("join: bootstrap data fetched from %s", j.client.URL)
	members, err := j.client.Members(ctx)
	if err != nil {
		return err
	}
	var endpoints, peers []string
	for _, m := range members {
		if !m.Learner {
			endpoints = append(endpoints, m.ClientURLs...)
			peers = append(peers, m.PeerURLs...)
		}
	}
	if data.Critical.Datastore == string(datastore.Dqlite) {
		if len(peers) == 0 {
			return fmt.Errorf("the server at %s lists no Dqlite members", j.client.URL)
		}
		addr, err := peerAddress(peers[0])
		if err != nil {
			return err
		}
		klog.Infof("join: the cluster runs on Dqlite; joining through member %s", addr)
		j.target.useDqlite(addr)
		return nil
	}
	if len(endpoints) == 0 {
		return fmt.Errorf("the server at %s lists no etcd members", j.client.URL)
	}
	j.target.useEtcd(endpoints)
	return nil
}

// localMember is the kind and name of the datastore member this server has
// data of, if any.
func (j *joinCluster) localMember() (datastore.Kind, string) {
	switch {
	case etcd.HasData(j.layout.Etcd()):
		return datastore.Etcd, etcd.MemberName(j.layout.Etcd())
	case dqlite.HasState(j.layout.Dqlite()):
		return datastore.Dqlite, j.nodeName
	}
	return "", ""
}

func (j *joinCluster) checkStillMember(ctx context.Context, kind datastore.Kind, name string) error {
	// A member trusts the cluster CA it holds: the token may have been
	// rotated while it was stopped, and its proof would no longer match.
	ca, err := os.ReadFile(j.layout.TLS().Cert(pki.ServerCA))
	if err != nil {
		return err
	}
	if j.client, err = join.NewVerifiedClient(j.client.URL, j.client.Token, ca); err != nil {
		return err
	}
	members, err := j.client.Members(ctx)
	if err != nil {
		klog.Warningf("join: cannot list members through %s (%v); starting from local data", j.client.URL, err)
		j.target.resume(kind)
		return nil
	}
	if slices.ContainsFunc(members, func(m join.Member) bool { return m.Name == name }) {
		j.target.resume(kind)
		return nil
	}
	dir := dataPaths(j.layout, kind)[0]
	backup := dir + "-removed-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, backup); err != nil {
		return err
	}
	klog.Warningf("join: this server (%s member %s) is no longer a member of the cluster; its old data is kept in %s and it rejoins as a new member", kind, name, backup)
	return j.join(ctx)
}
