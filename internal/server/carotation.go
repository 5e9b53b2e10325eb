package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/runner"
	"github.com/hakube/hakube/internal/secretsencrypt"
)

// CATurnKey holds the name of the server that restarts for a CA rotation
// ('hakube certificate rotate-ca'): one at a time, so an etcd or Dqlite
// cluster keeps its quorum.
const CATurnKey = "/hakube/ca-rotation/turn"

// caRollout moves this server to the cluster's CAs when a rotation changes
// them in the bootstrap data. It writes the new bundles at once: what
// reads them again (the apiserver's client and request-header CAs, the
// supervisor's client CA, the controller-manager's signers) trusts the new
// CAs within seconds, and the new CAs' cross-signatures keep every other
// holder verifying. Then it waits for its turn and restarts in place, which
// mints every leaf from the new CAs and makes what reads a CA once (etcd,
// Dqlite's peers, client-go's kubeconfigs) trust the new bundles.
type caRollout struct {
	tls    pki.Dir
	server string
	token  serverToken
	// members lists the datastore's members with their health; none on a
	// datastore that is not embedded.
	members func(context.Context) ([]datastore.Member, error)
	// running is the SharedTrust this process's daemons started with; want
	// is the cluster's ("" until read).
	running, want string
	// settled: this process runs with the cluster's CAs and holds no turn.
	settled bool
	restart chan error
	// said is when the wait for a turn was last logged.
	said time.Time
}

// record notes the CA files before the datastore's member starts, which
// mints its certificates from them; none on a new server.
func (r *caRollout) record(context.Context) error {
	if files, err := r.tls.ReadShared(); err == nil {
		r.running = pki.SharedTrust(files)
	}
	return nil
}

// started completes what the process runs with, once the cluster bootstrap
// wrote the cluster's CA files: those, for the daemons that start after it.
func (r *caRollout) started() error {
	if r.running != "" {
		return nil
	}
	files, err := r.tls.ReadShared()
	if err != nil {
		return err
	}
	r.running = pki.SharedTrust(files)
	return nil
}

// apply writes the cluster's CA files if they changed; secret is the
// token's, which server/token pins to the server CA.
func (r *caRollout) apply(files map[string][]byte, secret string) error {
	r.want = pki.SharedTrust(files)
	changed, err := writeCAs(r.token.layout, files)
	if err != nil || len(changed) == 0 {
		return err
	}
	klog.Infof("CA rotation: wrote the cluster's new CA bundles (%s); this server restarts with them at its turn", r.want)
	return r.token.adopt("", secret)
}

// tick takes this server's turn to restart when it runs with other CAs
// than the cluster's, and gives the turn back once it reported its new
// ones (reported says it did).
func (r *caRollout) tick(ctx context.Context, kv clientv3.KV, reported bool) error {
	if r.want == "" || (r.want == r.running && r.settled) {
		return nil
	}
	holder, rev, err := ReadCATurn(ctx, kv)
	if err != nil {
		return err
	}
	if r.want == r.running {
		switch {
		case holder != r.server:
			r.settled = true
		case reported:
			if err := deleteAt(ctx, kv, CATurnKey, rev); err != nil {
				return err
			}
			klog.Infof("CA rotation: this server runs with the cluster's CAs; the next server may restart")
			r.settled = true
		}
		return nil
	}
	reports, err := secretsencrypt.ReadReports(ctx, kv)
	if err != nil {
		return err
	}
	// A holder that left the cluster (no report for GoneAfter) gives the
	// turn up.
	holderGone := true
	for _, rep := range reports {
		age := time.Since(rep.Updated)
		if rep.Server == holder && age < secretsencrypt.GoneAfter {
			holderGone = false
		}
		if rep.Server != r.server && age > secretsencrypt.DownAfter && age < secretsencrypt.GoneAfter {
			r.log("waiting for %s, which is down (last seen %s ago): a restart now could lose the datastore's quorum", rep.Server, age.Round(time.Second))
			return nil
		}
	}
	if holder != "" && holder != r.server && !holderGone {
		r.log("waiting for %s, which restarts with the new CAs", holder)
		return nil
	}
	members, err := r.members(ctx)
	if err != nil {
		return err
	}
	for _, m := range members {
		if !m.Learner && !m.Healthy {
			r.log("waiting for datastore member %s, which is not healthy: a restart now could lose the quorum", m.Name)
			return nil
		}
	}
	if holder != r.server {
		b, _ := json.Marshal(turn{Server: r.server})
		txn := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(CATurnKey), "=", rev)).Then(clientv3.OpPut(CATurnKey, string(b)))
		if rev != 0 {
			// kine takes a compare-and-put at a revision with this Else only.
			txn = txn.Else(clientv3.OpGet(CATurnKey))
		}
		resp, err := txn.Commit()
		if err != nil || !resp.Succeeded {
			return err
		}
	}
	klog.Infof("CA rotation: restarting in place to run with the cluster's new CAs")
	select {
	case r.restart <- fmt.Errorf("%w: to run with the cluster's new CAs", runner.ErrRestart):
	default:
	}
	return nil
}

func (r *caRollout) log(format string, args ...any) {
	if time.Since(r.said) > 30*time.Second {
		klog.Infof("CA rotation: "+format, args...)
		r.said = time.Now()
	}
}

// turn is CATurnKey's value.
type turn struct {
	Server string `json:"server"`
}

// ReadCATurn is the server holding the turn ("" if none) and the key's
// revision (0 if absent).
func ReadCATurn(ctx context.Context, kv clientv3.KV) (string, int64, error) {
	resp, err := kv.Get(ctx, CATurnKey)
	if err != nil || len(resp.Kvs) == 0 {
		return "", 0, err
	}
	var t turn
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return "", 0, fmt.Errorf("%s is corrupt: %w", CATurnKey, err)
	}
	return t.Server, resp.Kvs[0].ModRevision, nil
}

// deleteAt deletes key if it is still at rev, in the form kine supports.
func deleteAt(ctx context.Context, kv clientv3.KV, key string, rev int64) error {
	_, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).Else(clientv3.OpGet(key)).Commit()
	return err
}
