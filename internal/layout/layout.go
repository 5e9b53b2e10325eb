// Package layout names every path under a data directory, so that no other
// code joins data-dir paths by hand and a file's place is decided once. A
// server keeps its state under server/.
package layout

import (
	"path/filepath"

	"github.com/hakube/hakube/internal/pki"
)

// Layout is the data directory of one server.
type Layout struct{ dir string }

// New returns the layout of dataDir (an absolute path).
func New(dataDir string) Layout { return Layout{dir: dataDir} }

// DataDir is the data directory itself.
func (l Layout) DataDir() string { return l.dir }

// ServerDir holds everything of the server role (mode 0700).
func (l Layout) ServerDir() string { return filepath.Join(l.dir, "server") }

// TLS holds the cluster's CAs and this server's certificates.
func (l Layout) TLS() pki.Dir { return pki.Dir(filepath.Join(l.ServerDir(), "tls")) }

// APIServerCertDir is where the apiserver writes certificates of its own.
func (l Layout) APIServerCertDir() string { return l.TLS().Path("temporary-certs") }

// Kubeconfig is the kubeconfig a control-plane component (controller,
// scheduler, admin) uses on this server to reach its apiserver.
func (l Layout) Kubeconfig(component string) string {
	return filepath.Join(l.ServerDir(), "cred", component+".kubeconfig")
}

// Manifests holds Kubernetes manifests the server applies to the cluster.
func (l Layout) Manifests() string { return filepath.Join(l.ServerDir(), "manifests") }

// Token is the server's copy of the cluster token, with the CA hash.
func (l Layout) Token() string { return filepath.Join(l.ServerDir(), "token") }

// DB holds the datastores' data.
func (l Layout) DB() string { return filepath.Join(l.ServerDir(), "db") }

// SQLite is the embedded SQLite database of a single server.
func (l Layout) SQLite() string { return filepath.Join(l.DB(), "state.db") }

// SQLiteFiles are the SQLite database and its journal files.
func (l Layout) SQLiteFiles() []string {
	p := l.SQLite()
	return []string{p, p + "-wal", p + "-shm"}
}

// KineSocket is where kine serves the etcd API to the apiserver.
func (l Layout) KineSocket() string { return filepath.Join(l.ServerDir(), "kine.sock") }

// Etcd is the embedded etcd member's directory.
func (l Layout) Etcd() string { return filepath.Join(l.DB(), "etcd") }

// Dqlite is the Dqlite member's directory.
func (l Layout) Dqlite() string { return filepath.Join(l.DB(), "dqlite") }

// DqliteSocket is where the Dqlite member serves the etcd API to the apiserver.
func (l Layout) DqliteSocket() string { return filepath.Join(l.ServerDir(), "dqlite.sock") }

// Snapshots is the default directory of datastore snapshots.
func (l Layout) Snapshots() string { return filepath.Join(l.DB(), "snapshots") }

// ResetMarker is left by a completed --cluster-reset until the server
// starts without it.
func (l Layout) ResetMarker() string { return filepath.Join(l.DB(), "cluster-reset-done") }
