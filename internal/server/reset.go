package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/token"
)

// clusterReset is --cluster-reset: after a quorum loss, one server becomes
// the only member of its cluster, with its own data or a snapshot's. The
// marker it leaves makes a second reset an explicit choice.
type clusterReset struct {
	kind   datastore.Kind
	marker string
	// from is the snapshot restored ("" keeps the server's data); dqlite is
	// its staged copy until the member has taken it in.
	from   string
	dqlite *dqlite.Staged
}

// planReset checks that a reset can be done and, for a restore, does every
// step that can fail before the server's data is touched: the snapshot is
// checked and restored beside the data, and its bootstrap data decrypted
// with the token. Only then is the old data moved aside and the cluster's
// CAs written, so a failed restore leaves the server as it was.
func planReset(cfg Config, tok token.Token, etcdCfg etcd.Config) (*clusterReset, error) {
	l := cfg.layout()
	r := &clusterReset{marker: l.ResetMarker()}
	if b, err := os.ReadFile(r.marker); err == nil {
		return nil, fmt.Errorf("this server's cluster was already reset (%s, recorded in %s). Remove --cluster-reset from its "+
			"command line and start it again; to reset once more on purpose, delete that file first",
			strings.TrimSpace(string(b)), r.marker)
	}
	have := localKinds(l)
	if cfg.ClusterResetRestorePath == "" {
		if len(have) != 1 || (have[0] != datastore.Etcd && have[0] != datastore.Dqlite) {
			return nil, fmt.Errorf("--cluster-reset needs this server's embedded etcd or Dqlite data, and it has %s; "+
				"to start from a snapshot instead, add --cluster-reset-restore-path", describeKinds(have))
		}
		r.kind = have[0]
		return r, nil
	}

	path, err := restoreSource(cfg)
	if err != nil {
		return nil, err
	}
	r.from = path
	if err := os.MkdirAll(l.DB(), 0o700); err != nil {
		return nil, err
	}
	kind, plain, done, err := snapshot.Prepare(path, l.DB())
	if err != nil {
		return nil, err
	}
	defer done()
	r.kind = kind
	var get func(string) ([]byte, bool, error)
	var discard func()
	commit := func() error { return nil }
	switch kind {
	case datastore.Etcd:
		s, err := etcd.Stage(etcdCfg, plain)
		if err != nil {
			return nil, err
		}
		get, discard, commit = s.Get, s.Discard, s.Commit
	case datastore.Dqlite:
		s, err := dqlite.Stage(l.Dqlite(), plain)
		if err != nil {
			return nil, err
		}
		get, discard, r.dqlite = s.Get, s.Discard, s
	}
	data, err := snapshotBootstrap(get, tok)
	if err == nil {
		// Checked here, not only at the bootstrap: by then the old data
		// would be aside.
		mine := cfg.critical(datastore.Kind(data.Critical.Datastore))
		if m := mine.Mismatches(data.Critical); len(m) > 0 {
			err = bootstrap.MismatchError(m)
		}
	}
	if err == nil {
		err = moveAside(l, have)
	}
	if err == nil {
		_, err = l.TLS().WriteShared(data.Files)
	}
	if err == nil {
		err = commit()
	}
	if err != nil {
		discard()
		return nil, err
	}
	return r, nil
}

// restoreSource finds the snapshot to restore: a file, a snapshot's name in
// the snapshot directory, or, with --etcd-s3, a name in the S3 store, which
// is downloaded into the snapshot directory first (with its metadata, so it
// is checked like a local one).
func restoreSource(cfg Config) (string, error) {
	dir := snapshot.Dir(cfg.snapshotDir())
	path, err := snapshot.Resolve(dir, cfg.ClusterResetRestorePath)
	if err == nil || !cfg.S3.Enabled {
		return path, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.S3.Timeout)
	defer cancel()
	store, err := snapshot.NewS3(ctx, cfg.S3)
	if err != nil {
		return "", err
	}
	klog.Infof("cluster reset: downloading snapshot %s from %s", cfg.ClusterResetRestorePath, store.Location(cfg.ClusterResetRestorePath))
	return store.Download(ctx, cfg.ClusterResetRestorePath, dir)
}

// snapshotBootstrap reads the cluster's bootstrap data from a staged
// snapshot: under tok, or under the token that replaced it before the
// snapshot was taken.
func snapshotBootstrap(get func(string) ([]byte, bool, error), tok token.Token) (bootstrap.Data, error) {
	data, _, found, err := bootstrap.Follow(get, tok.Secret)
	if err != nil {
		return bootstrap.Data{}, fmt.Errorf("the snapshot's bootstrap data: %w", err)
	}
	if !found {
		return bootstrap.Data{}, errors.New("the snapshot holds no bootstrap data for this token: it was taken of a cluster with another token. " +
			"Pass that cluster's token (--token, --token-file, HAKUBE_TOKEN or K3S_TOKEN)")
	}
	if ca := data.Files[pki.ServerCA+".crt"]; tok.CAHash != "" && tok.CAHash != token.HashCA(ca) {
		return bootstrap.Data{}, errors.New("the token's CA hash does not match the snapshot's server CA: the token belongs to another cluster")
	}
	return data, nil
}

// moveAside keeps the data a restore replaces, beside where it was.
func moveAside(l layout.Layout, kinds []datastore.Kind) error {
	suffix := "-before-restore-" + time.Now().UTC().Format("20060102T150405Z")
	for _, k := range kinds {
		for _, p := range dataPaths(l, k) {
			if !fsutil.Exists(p) {
				continue
			}
			if err := os.Rename(p, p+suffix); err != nil {
				return err
			}
			klog.Infof("cluster reset: the old data %s is kept as %s", p, p+suffix)
		}
	}
	return nil
}

func describeKinds(kinds []datastore.Kind) string {
	if len(kinds) == 0 {
		return "none"
	}
	return "data of " + kindList(kinds)
}

// done records the reset and says what to do next, once the server is ready.
func (r *clusterReset) done(advertise net.IP, port int) error {
	if r.dqlite != nil {
		r.dqlite.Discard()
	}
	what := "its own data"
	if r.from != "" {
		what = "the data of snapshot " + r.from
	}
	record := fmt.Sprintf("reset at %s, with %s", time.Now().UTC().Format(time.RFC3339), what)
	if err := fsutil.WriteFile(r.marker, []byte(record+"\n"), 0o600); err != nil {
		return err
	}
	url := "https://" + net.JoinHostPort(advertise.String(), strconv.Itoa(port))
	klog.Infof("cluster reset done: this server is now the only member of the cluster (%s), with %s.\n"+
		"  1. Remove --cluster-reset (and --cluster-reset-restore-path) from this server's command line: "+
		"starting it again with them is refused.\n"+
		"  2. On each other server: stop hakube and start it with --server %s and the cluster's token. It finds it is "+
		"no longer a member, keeps its old data aside (<data-dir>/server/db/%s-removed-<time>) and joins again.",
		r.kind, what, url, r.kind)
	return nil
}
