// Package kine serves the etcd v3 API over a SQL database with kine: the embedded
// SQLite default and external PostgreSQL, MySQL or SQLite endpoints.
package kine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/sqlite"
	"github.com/k3s-io/kine/pkg/endpoint"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/fsutil"
)

// maxSocketPath is the longest unix socket path Linux accepts.
const maxSocketPath = 107

// Config configures a kine datastore.
type Config struct {
	// Socket is where kine serves the etcd API; DBPath is the embedded SQLite
	// database, used when Endpoint is empty.
	Socket, DBPath string
	// Endpoint is an external SQL URL (postgres://, mysql://, sqlite://); empty
	// selects the embedded SQLite database.
	Endpoint string
	// ConnectTimeout bounds how long an external database may take to answer.
	ConnectTimeout time.Duration
}

// Validate checks the configuration without touching anything.
func (c Config) Validate() error {
	if c.Socket == "" || (c.Endpoint == "" && c.DBPath == "") {
		return errors.New("the datastore socket and database paths are required")
	}
	if len(c.Socket) > maxSocketPath {
		return fmt.Errorf("the datastore socket %s is longer than %d characters; choose a shorter --data-dir", c.Socket, maxSocketPath)
	}
	if c.Endpoint == "" {
		return nil
	}
	return ValidateURL(c.Endpoint)
}

// ValidateURL checks that an external SQL URL is one kine can use.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("malformed datastore endpoint: %w", err)
	}
	switch u.Scheme {
	case "postgres", "postgresql", "mysql":
		if u.Host == "" {
			return fmt.Errorf("datastore endpoint %s has no host; use %s://user:password@host:port/database", redact(u), u.Scheme)
		}
	case "sqlite":
		if strings.TrimPrefix(raw, "sqlite://") == "" {
			return errors.New("sqlite datastore endpoint needs a path: sqlite:///path/to/state.db")
		}
	default:
		return fmt.Errorf("unsupported datastore endpoint scheme %q; use postgres://, mysql://, sqlite:// or https:// (etcd)", u.Scheme)
	}
	return nil
}

// dialAddress is host:port of a postgres or mysql URL; kine also accepts MySQL's
// "tcp(host:port)" form.
func dialAddress(u *url.URL) string {
	host := strings.TrimSuffix(strings.TrimPrefix(u.Host, "tcp("), ")")
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "5432"
	if u.Scheme == "mysql" {
		port = "3306"
	}
	return net.JoinHostPort(host, port)
}

func redact(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	return c.String()
}

// Kine is a datastore component backed by kine.
type Kine struct {
	cfg    Config
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan error
	ep     datastore.Endpoint
}

// New returns a kine datastore; call Validate on cfg first.
func New(cfg Config) *Kine {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 60 * time.Second
	}
	return &Kine{cfg: cfg}
}

// Name implements component.Component.
func (k *Kine) Name() string { return "datastore (" + string(k.Kind()) + ")" }

// Kind implements datastore.Datastore.
func (k *Kine) Kind() datastore.Kind {
	if k.cfg.Endpoint == "" {
		return datastore.SQLite
	}
	return datastore.ExternalSQL
}

// Endpoint implements datastore.Datastore.
func (k *Kine) Endpoint() datastore.Endpoint { return k.ep }

// Init checks the configuration and, for a network database, that its address answers.
func (k *Kine) Init(ctx context.Context) error {
	if err := k.cfg.Validate(); err != nil {
		return err
	}
	if k.cfg.Endpoint == "" {
		return nil
	}
	u, _ := url.Parse(k.cfg.Endpoint)
	if u.Scheme == "sqlite" {
		return nil
	}
	host := dialAddress(u)
	if err := datastore.DialAny(ctx, host); err != nil {
		return fmt.Errorf("cannot reach the datastore at %s: %w; check --datastore-endpoint and that the database is running", host, err)
	}
	return nil
}

// Start opens the database and serves the etcd API on a private unix socket.
func (k *Kine) Start(ctx context.Context) error {
	ep := k.cfg.Endpoint
	if ep == "" {
		if err := os.MkdirAll(filepath.Dir(k.cfg.DBPath), 0o700); err != nil {
			return err
		}
		// The database holds every Secret: 0600, not the umask's 0644.
		// SQLite gives its -wal and -shm files the database's mode.
		if err := fsutil.CreateOrChmod(k.cfg.DBPath, 0o600); err != nil {
			return err
		}
		ep = "sqlite://" + k.cfg.DBPath + "?" + sqlite.DefaultParams
	}
	sock := k.cfg.Socket
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	kctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	k.done = make(chan error, 1)
	// kine's connect loop ignores cancellation, so it runs apart and Ready bounds the wait.
	go func() {
		etcdCfg, err := endpoint.Listen(kctx, endpoint.Config{
			Listener:  "unix://" + sock,
			Endpoint:  ep,
			WaitGroup: &k.wg,
			// kine's own command-line defaults.
			ConnectionPoolConfig: generic.ConnectionPoolConfig{MaxIdle: 20, MaxIdleTime: 2 * time.Minute},
			NotifyInterval:       5 * time.Second,
			EmulatedETCDVersion:  "3.6.11",
			CompactInterval:      5 * time.Minute,
			CompactTimeout:       5 * time.Second,
			CompactMinRetain:     1000,
			CompactBatchSize:     1000,
			PollBatchSize:        500,
			PollInterval:         time.Second,
		})
		if err == nil {
			k.ep = datastore.Endpoint{URLs: etcdCfg.Endpoints}
		}
		k.done <- err
	}()
	return nil
}

// Ready waits until kine answers on its socket.
func (k *Kine) Ready(ctx context.Context) error {
	select {
	case err := <-k.done:
		if err != nil {
			return fmt.Errorf("opening the datastore: %w", err)
		}
	case <-time.After(k.cfg.ConnectTimeout):
		return fmt.Errorf("the datastore did not open within %s; check --datastore-endpoint and the database's logs", k.cfg.ConnectTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	return datastore.WaitReachable(ctx, k.ep, k.cfg.ConnectTimeout)
}

// Stop closes the socket and the database.
func (k *Kine) Stop() error {
	if k.cancel == nil {
		return nil
	}
	k.cancel()
	k.cancel = nil
	waited := make(chan struct{})
	go func() { k.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		return errors.New("datastore did not close within 10s")
	}
	return nil
}
