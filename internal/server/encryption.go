package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/controlplane"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/secretsencrypt"
)

// encryptionKeys keeps this server's EncryptionConfiguration equal to the
// cluster's keys while it runs, and reports which configuration its
// apiserver has loaded: 'hakube secrets-encrypt rotate-keys' changes the keys
// in the bootstrap data and moves on when every server reports the change.
// It follows the bootstrap data to a rotated token too, and reports the
// token it holds, which 'hakube token rotate' waits on, and to rotated CAs
// (caRollout), reporting the CAs it runs with for 'hakube certificate
// rotate-ca'.
type encryptionKeys struct {
	ds     datastore.Datastore
	cas    *caRollout
	secret string
	token  serverToken
	server string
	path   string
	// forgetOthers drops the other servers' reports first: after a reset
	// or a move of the data they are not members until they rejoin, and a
	// restored snapshot holds the reports of servers that may never return.
	forgetOthers bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// encryptionKeysEvery is how often the bootstrap data's revision is read; it
// is decrypted (100,000 PBKDF2 rounds) only when the revision moved.
const encryptionKeysEvery = 2 * time.Second

// loadedConfigMetric is the apiserver's metric naming, in its hash label,
// the configuration it loaded last.
const loadedConfigMetric = "apiserver_encryption_config_controller_last_config_info"

func (e *encryptionKeys) Name() string { return "secrets encryption keys" }

func (e *encryptionKeys) Init(context.Context) error { return nil }

func (e *encryptionKeys) Start(ctx context.Context) error {
	// The cluster bootstrap wrote the cluster's current token.
	held, err := storedToken(e.token.layout)
	if err != nil {
		return err
	} else if held == nil {
		return errors.New("no token in " + e.token.layout.Token())
	}
	e.secret = held.Secret
	if err := e.cas.started(); err != nil {
		return err
	}
	cli, err := datastore.Client(e.ds.Endpoint())
	if err != nil {
		return err
	}
	if e.forgetOthers {
		if err := e.forget(ctx, cli); err != nil {
			cli.Close()
			return err
		}
	}
	// The loop outlives Start's context: it ends with Stop. Its first tick
	// runs now, so this server's report is current once it says it is ready.
	lctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	tr := &tracker{}
	e.tick(ctx, cli, tr)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer cli.Close()
		e.loop(lctx, cli, tr)
	}()
	return nil
}

// tracker is what the loop remembers between ticks.
type tracker struct {
	rev                                 int64
	reported, reportedToken, reportedCA string
	reportedAt, wroteAt                 time.Time
}

func (e *encryptionKeys) loop(ctx context.Context, kv clientv3.KV, tr *tracker) {
	t := time.NewTicker(encryptionKeysEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.tick(ctx, kv, tr)
	}
}

// tick writes the file if the keys changed, and reports if due.
func (e *encryptionKeys) tick(ctx context.Context, kv clientv3.KV, tr *tracker) {
	if r, wrote, err := e.sync(ctx, kv, tr.rev); err == nil {
		tr.rev = r
		if wrote {
			tr.wroteAt = time.Now()
		}
	} else if ctx.Err() == nil {
		klog.Warningf("secrets encryption: reading the cluster's keys: %v", err)
	}
	e.report(ctx, kv, tr)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.cas.tick(cctx, kv, tr.reportedCA == e.cas.running); err != nil && ctx.Err() == nil {
		klog.Warningf("CA rotation: %v", err)
	}
}

// report writes this server's report if due.
func (e *encryptionKeys) report(ctx context.Context, kv clientv3.KV, tr *tracker) {
	// Gathering the apiserver's metrics is not free: every tick only while a
	// new file waits to be loaded, else when a report is due or the token
	// changed.
	held := bootstrap.Key(e.secret)
	if time.Since(tr.reportedAt) < secretsencrypt.ReportEvery && time.Since(tr.wroteAt) >= time.Minute && held == tr.reportedToken {
		return
	}
	loaded := loadedConfig()
	if loaded == "" || (loaded == tr.reported && held == tr.reportedToken && time.Since(tr.reportedAt) < secretsencrypt.ReportEvery) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := secretsencrypt.WriteReport(rctx, kv, secretsencrypt.Report{Server: e.server, Loaded: loaded, Token: held, CA: e.cas.running, Updated: time.Now().UTC()})
	cancel()
	if err == nil {
		if loaded != tr.reported {
			klog.Infof("secrets encryption: the apiserver runs with configuration %s", loaded)
		}
		tr.reported, tr.reportedToken, tr.reportedCA, tr.reportedAt = loaded, held, e.cas.running, time.Now()
	} else if ctx.Err() == nil {
		klog.Warningf("secrets encryption: reporting this server's configuration: %v", err)
	}
}

// Failed yields runner.ErrRestart when the server restarts for a CA rotation.
func (e *encryptionKeys) Failed() <-chan error { return e.cas.restart }

func (e *encryptionKeys) forget(ctx context.Context, kv clientv3.KV) error {
	reports, err := secretsencrypt.ReadReports(ctx, kv)
	if err != nil {
		return err
	}
	for _, r := range reports {
		if r.Server == e.server {
			continue
		}
		if err := secretsencrypt.DeleteReport(ctx, kv, r.Server); err != nil {
			return err
		}
		klog.Infof("secrets encryption: forgot %s's report until it rejoins", r.Server)
	}
	return nil
}

// sync writes the file again if the bootstrap data moved past rev and its
// keys changed; it returns the revision it saw.
func (e *encryptionKeys) sync(ctx context.Context, kv clientv3.KV, rev int64) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kv.Get(ctx, bootstrap.Key(e.secret))
	if err != nil {
		return rev, false, err
	}
	if len(resp.Kvs) == 0 {
		return rev, false, errors.New("no bootstrap data under this server's token")
	}
	if resp.Kvs[0].ModRevision == rev {
		return rev, false, nil
	}
	data, err := bootstrap.Decrypt(e.secret, resp.Kvs[0].Value)
	if err != nil {
		return rev, false, err
	}
	if data.ReplacedBy != "" {
		// 'hakube token rotate' ran: finish it if it was interrupted,
		// follow it, and read on under the new token at the next tick.
		if err := bootstrap.Finish(ctx, kv, data.ReplacedBy); err != nil {
			return rev, false, err
		}
		if err := e.token.adopt(e.secret, data.ReplacedBy); err != nil {
			return rev, false, err
		}
		e.secret = data.ReplacedBy
		return 0, false, nil
	}
	if err := e.cas.apply(data.Files, e.secret); err != nil {
		return rev, false, fmt.Errorf("writing the cluster's CAs: %w", err)
	}
	changed, err := writeEncryptionConfig(e.path, data.Encryption)
	if err != nil {
		return rev, false, err
	}
	if changed {
		active := "none: new Secrets are written in clear"
		if data.Encryption.Enabled() {
			active = data.Encryption.Active
		}
		klog.Infof("secrets encryption: wrote the cluster's new keys to %s (active key %s); the apiserver rereads it within %s",
			e.path, active, controlplane.EncryptionReload)
	}
	return resp.Kvs[0].ModRevision, changed, nil
}

// loadedConfig is the hash of the configuration this process's apiserver
// loaded, "" before it has loaded one.
func loadedConfig() string {
	// A gather error still returns the families it could gather.
	mfs, _ := legacyregistry.DefaultGatherer.Gather()
	for _, mf := range mfs {
		if mf.GetName() != loadedConfigMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "hash" {
					return l.GetValue()
				}
			}
		}
	}
	return ""
}

func (e *encryptionKeys) Stop() error {
	if e.cancel != nil {
		e.cancel()
		e.wg.Wait()
	}
	return nil
}
