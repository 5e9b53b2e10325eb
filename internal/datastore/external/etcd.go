// Package external connects the control plane to an etcd cluster that hakube
// does not run.
package external

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hakube/hakube/internal/datastore"
)

// Config configures an external etcd datastore.
type Config struct {
	// Endpoints is the comma-separated list of etcd client URLs.
	Endpoints                 string
	CAFile, CertFile, KeyFile string
	ConnectTimeout            time.Duration
}

// IsEtcdURL reports whether a --datastore-endpoint value names etcd.
func IsEtcdURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// Validate checks URLs and files without contacting the cluster.
func (c Config) Validate() error {
	for _, raw := range strings.Split(c.Endpoints, ",") {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("malformed etcd endpoint %q: %w", raw, err)
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("malformed etcd endpoint %q; use https://host:2379[,https://host2:2379]", raw)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("--datastore-certfile and --datastore-keyfile go together")
	}
	for _, f := range []string{c.CAFile, c.CertFile, c.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("datastore TLS file: %w", err)
		}
	}
	return nil
}

// Etcd is an external etcd datastore.
type Etcd struct{ cfg Config }

// New returns an external etcd datastore.
func New(cfg Config) *Etcd {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	return &Etcd{cfg: cfg}
}

// Name implements component.Component.
func (e *Etcd) Name() string { return "datastore (external etcd)" }

// Kind implements datastore.Datastore.
func (e *Etcd) Kind() datastore.Kind { return datastore.ExternalEtcd }

// Endpoint implements datastore.Datastore.
func (e *Etcd) Endpoint() datastore.Endpoint {
	return datastore.Endpoint{
		URLs:   strings.Split(e.cfg.Endpoints, ","),
		CAFile: e.cfg.CAFile, CertFile: e.cfg.CertFile, KeyFile: e.cfg.KeyFile,
	}
}

// Init validates the configuration and checks that some member's address
// answers, so an unreachable cluster fails before anything is written.
func (e *Etcd) Init(ctx context.Context) error {
	if err := e.cfg.Validate(); err != nil {
		return err
	}
	var addrs []string
	for _, raw := range strings.Split(e.cfg.Endpoints, ",") {
		u, _ := url.Parse(raw)
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "2379")
		}
		addrs = append(addrs, host)
	}
	err := datastore.DialAny(ctx, addrs...)
	if err == nil {
		return nil
	}
	return fmt.Errorf("cannot reach any etcd endpoint of --datastore-endpoint (%w); check the addresses and that etcd is running", err)
}

// Start implements component.Component; the cluster runs elsewhere.
func (e *Etcd) Start(context.Context) error { return nil }

// Ready waits until the cluster answers.
func (e *Etcd) Ready(ctx context.Context) error {
	if err := datastore.WaitReachable(ctx, e.Endpoint(), e.cfg.ConnectTimeout); err != nil {
		return fmt.Errorf("cannot reach the external etcd: %w; check --datastore-endpoint and the TLS files", err)
	}
	return nil
}

// Stop implements component.Component.
func (e *Etcd) Stop() error { return nil }
