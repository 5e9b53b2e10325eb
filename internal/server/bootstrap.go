package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/token"
)

// clusterBootstrap makes the local TLS directory agree with the cluster's shared
// material in the datastore (creating it for a new cluster), checks the token
// against it, and then mints this server's own certificates.
type clusterBootstrap struct {
	ds       datastore.Datastore
	tlsDir   pki.Dir
	tok      token.Token
	token    serverToken
	critical bootstrap.Critical
	// encryptionConfig is where the apiserver's EncryptionConfiguration goes.
	encryptionConfig string
	// encryptionOnCreate: a new cluster encrypts Secrets from the start.
	encryptionOnCreate bool
	// server is this server's name in its secrets-encryption report.
	server string
	// afterShared runs once the CAs are in place: minting leaves, kubeconfigs.
	afterShared func() error
	// agentSecret is --agent-token's secret ("" without it): stored as the
	// cluster's when it has none, and refused when it differs.
	agentSecret, agentTokenPath string
	// agentCAHash is --agent-token's CA pin, when given in full form.
	agentCAHash string
	// onAgentSecret hands the cluster's agent token to the join endpoint.
	onAgentSecret func(secret string)
}

func (b *clusterBootstrap) Name() string { return "cluster bootstrap" }

func (b *clusterBootstrap) Init(context.Context) error { return nil }

func (b *clusterBootstrap) Start(ctx context.Context) error {
	cli, err := datastore.Client(b.ds.Endpoint())
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	// Reported before the keys are read: a key change running now either
	// sees this server and waits for its apiserver, or stored its step
	// before the read below, which then gets it.
	if err := secretsencrypt.WriteReport(ctx, cli, secretsencrypt.Report{Server: b.server, Updated: time.Now().UTC()}); err != nil {
		return fmt.Errorf("reporting this server's start: %w", err)
	}
	data, current, found, err := bootstrap.Load(ctx, cli, b.tok.Secret)
	if errors.Is(err, bootstrap.ErrOtherToken) {
		if stored, _ := storedToken(b.token.layout); stored != nil && stored.Secret != b.tok.Secret {
			return fmt.Errorf("the token given differs from the one this server was created with (stored in %s), and the cluster does not take it: "+
				"start it with that token, or with none", b.token.layout.Token())
		}
	}
	if err != nil {
		return err
	}
	if found && current != b.tok.Secret {
		// A rotation this server missed: finish it if it was interrupted.
		if err := bootstrap.Finish(ctx, cli, current); err != nil {
			return err
		}
	}
	if !found {
		data, err = b.create(ctx, cli)
		if err != nil {
			return err
		}
		current = b.tok.Secret
	}
	// The datastore kind is what this server runs on: after a migration the
	// record still names the old kind, so it is updated rather than compared.
	// A joining server learns its kind from the cluster, so ask the datastore now.
	kind := string(b.ds.Kind())
	mine := b.critical
	mine.Datastore = data.Critical.Datastore
	if m := mine.Mismatches(data.Critical); len(m) > 0 {
		return bootstrap.MismatchError(m)
	}
	if data.Critical.Datastore != kind {
		klog.Infof("the cluster's datastore is now %s (was %s)", kind, data.Critical.Datastore)
		// An update of that field alone: the keys may be changing meanwhile.
		if data, err = bootstrap.Update(ctx, cli, b.tok.Secret, func(d *bootstrap.Data) error {
			d.Critical.Datastore = kind
			return nil
		}); err != nil {
			return err
		}
	}
	if b.encryptionOnCreate && !data.Encryption.Enabled() {
		klog.Warningf("--secrets-encryption only applies to a new cluster, and this one stores Secrets in clear: " +
			"run 'hakube secrets-encrypt enable' on a server to encrypt them")
	}
	if _, err := writeEncryptionConfig(b.encryptionConfig, data.Encryption); err != nil {
		return err
	}
	changed, err := writeCAs(b.token.layout, data.Files)
	if err != nil {
		return fmt.Errorf("writing the cluster's CAs: %w", err)
	}
	if len(changed) > 0 && found {
		klog.Infof("restored cluster certificates from the datastore: %s", strings.Join(changed, ", "))
	}
	ca := data.Files[pki.ServerCA+".crt"]
	replacedCAs, err := readHashes(b.token.layout.ReplacedCAs())
	if err != nil {
		return err
	}
	// A pin of a CA this server held before names this cluster too.
	pinned := func(h string) bool { return h == "" || h == token.HashCA(ca) || slices.Contains(replacedCAs, h) }
	if !pinned(b.tok.CAHash) {
		return errors.New("the token's CA hash does not match this cluster's server CA; " +
			"the token belongs to another cluster, or was mistyped")
	}
	// A token replaced while this server was stopped gives way to the new one.
	if err := b.token.adopt(b.tok.Secret, current); err != nil {
		return err
	}
	b.tok.Secret = current
	if !pinned(b.agentCAHash) {
		return errors.New("the --agent-token's CA hash does not match this cluster's server CA; it belongs to another cluster, or was mistyped")
	}
	if data, err = b.agentToken(ctx, cli, data); err != nil {
		return err
	}
	if data.AgentSecret != "" {
		agent := token.Token{User: token.NodeUser, Secret: data.AgentSecret}.WithCA(ca)
		if err := fsutil.WriteFile(b.agentTokenPath, []byte(agent.String()+"\n"), 0o600); err != nil {
			return err
		}
		b.onAgentSecret(data.AgentSecret)
	}
	return b.afterShared()
}

// agentToken makes --agent-token the cluster's when it has none; the
// cluster keeps one agent token, so another is refused.
func (b *clusterBootstrap) agentToken(ctx context.Context, cli clientv3.KV, data bootstrap.Data) (bootstrap.Data, error) {
	if b.agentSecret == "" || data.AgentSecret == b.agentSecret {
		return data, nil
	}
	differs := fmt.Errorf("--agent-token differs from the cluster's agent token: give the cluster's (in %s on a server) or none", b.agentTokenPath)
	if b.agentSecret == b.tok.Secret {
		return data, errors.New("--agent-token is the server token: give agents a secret of their own, or no --agent-token")
	}
	if data.AgentSecret != "" {
		return data, differs
	}
	data, err := bootstrap.Update(ctx, cli, b.tok.Secret, func(d *bootstrap.Data) error {
		if d.AgentSecret != "" && d.AgentSecret != b.agentSecret {
			return differs
		}
		d.AgentSecret = b.agentSecret
		return nil
	})
	if err == nil {
		klog.Infof("agents join with the agent token from now on (%s); the server token still works for them", b.agentTokenPath)
	}
	return data, err
}

// create stores the local CAs (generated if absent) as the cluster's; if another
// server got there first, its data wins.
func (b *clusterBootstrap) create(ctx context.Context, cli clientv3.KV) (bootstrap.Data, error) {
	if err := b.tlsDir.EnsureCAs(); err != nil {
		return bootstrap.Data{}, err
	}
	files, err := b.tlsDir.ReadShared()
	if err != nil {
		return bootstrap.Data{}, err
	}
	critical := b.critical
	critical.Datastore = string(b.ds.Kind())
	data := bootstrap.Data{Files: files, Critical: critical}
	if b.encryptionOnCreate {
		if data.Encryption, err = secretsencrypt.New(time.Now()); err != nil {
			return bootstrap.Data{}, err
		}
	}
	created, err := bootstrap.Create(ctx, cli, b.tok.Secret, data)
	if err != nil {
		return bootstrap.Data{}, err
	}
	if created {
		klog.Infof("stored the cluster's bootstrap data in the datastore")
		return data, nil
	}
	data, _, _, err = bootstrap.Load(ctx, cli, b.tok.Secret)
	return data, err
}

func (b *clusterBootstrap) Stop() error { return nil }

// writeEncryptionConfig writes the apiserver's EncryptionConfiguration from
// the cluster's keys (identity alone when it has none) unless the file holds
// it already; changed says it wrote.
func writeEncryptionConfig(path string, keys *secretsencrypt.State) (changed bool, err error) {
	cfg, err := keys.Config()
	if err != nil {
		return false, err
	}
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, cfg) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	return true, fsutil.WriteFile(path, cfg, 0o600)
}

// resolveAgentToken is --agent-token (or --agent-token-file), the zero
// token without one.
func resolveAgentToken(c Config) (token.Token, error) {
	given, err := token.Given(c.AgentToken, c.AgentTokenFile, "agent-token")
	if err != nil || given == "" {
		return token.Token{}, err
	}
	t, err := token.Parse(given)
	if err != nil {
		return token.Token{}, fmt.Errorf("malformed --agent-token: %w", err)
	}
	return t, nil
}
