// Package layout names every path under a data directory, so that no other
// code joins data-dir paths by hand and a file's place is decided once. A
// server keeps its state under server/, a node (an agent, or a server that is
// a node) under agent/.
package layout

import (
	"path/filepath"

	"github.com/hakube/hakube/internal/pki"
)

// Layout is the data directory of one server or agent.
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

// EncryptionConfig is the apiserver's EncryptionConfiguration, written
// from the cluster's keys at every start (it holds them: 0600).
func (l Layout) EncryptionConfig() string {
	return filepath.Join(l.ServerDir(), "cred", "encryption-config.json")
}

// Manifests holds Kubernetes manifests the server applies to the cluster.
func (l Layout) Manifests() string { return filepath.Join(l.ServerDir(), "manifests") }

// Token is the server's copy of the cluster token, with the CA hash.
func (l Layout) Token() string { return filepath.Join(l.ServerDir(), "token") }

// ReplacedTokens lists the hashes of the tokens 'hakube token rotate'
// replaced, one per line: a server started with one of them (an old
// --token in its configuration) takes the current one from Token.
func (l Layout) ReplacedTokens() string { return filepath.Join(l.ServerDir(), "token-replaced") }

// ReplacedCAs lists the pins (token.HashCA) of the server CAs 'hakube
// certificate rotate-ca' replaced, one per line: a server started with a
// full token pinned to one takes Token instead.
func (l Layout) ReplacedCAs() string { return filepath.Join(l.ServerDir(), "ca-replaced") }

// AgentToken is the cluster's agent token, pinned to its CA, when it has one
// (--agent-token): what agents join with.
func (l Layout) AgentToken() string { return filepath.Join(l.ServerDir(), "agent-token") }

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

// AgentDir holds everything of the node role (mode 0700).
func (l Layout) AgentDir() string { return filepath.Join(l.dir, "agent") }

// AgentTLS holds the node's keys, its certificates and the cluster CAs'
// certificates (never their keys).
func (l Layout) AgentTLS() pki.Dir { return pki.Dir(filepath.Join(l.AgentDir(), "tls")) }

// AgentKubeconfig is the kubeconfig a node daemon (kubelet, kube-proxy,
// flannel) reaches the API with.
func (l Layout) AgentKubeconfig(daemon string) string {
	return filepath.Join(l.AgentDir(), daemon+".kubeconfig")
}

// NodePassword binds this machine to its node name (made on first join).
func (l Layout) NodePassword() string { return filepath.Join(l.AgentDir(), "node-password") }

// RenewRequest asks the running node to renew its certificates now
// ('hakube certificate rotate'); the node removes it once they are.
func (l Layout) RenewRequest() string { return filepath.Join(l.AgentDir(), "renew-certificates") }

// Servers is the client-side load balancer's last list of servers, so an
// agent restarted while its --server is down still finds the others.
func (l Layout) Servers() string { return filepath.Join(l.AgentDir(), "etc", "servers.json") }

// Containerd is containerd's root (images, snapshots, its own state).
func (l Layout) Containerd() string { return filepath.Join(l.AgentDir(), "containerd") }

// ContainerdConfig is the containerd configuration hakube generates.
func (l Layout) ContainerdConfig() string {
	return filepath.Join(l.AgentDir(), "etc", "containerd", "config.toml")
}

// ContainerdHosts holds containerd's registry hosts (from registries.yaml).
func (l Layout) ContainerdHosts() string {
	return filepath.Join(l.AgentDir(), "etc", "containerd", "certs.d")
}

// ContainerdState is containerd's state directory (sockets, FIFOs).
func (l Layout) ContainerdState() string { return filepath.Join(l.AgentDir(), "run", "containerd") }

// ContainerdSocket is containerd's gRPC (and CRI) socket.
func (l Layout) ContainerdSocket() string {
	return filepath.Join(l.ContainerdState(), "containerd.sock")
}

// ContainerdLog is containerd's output.
func (l Layout) ContainerdLog() string { return filepath.Join(l.Containerd(), "containerd.log") }

// PodLogs holds the containers' logs (the kubelet's podLogsDirectory).
func (l Layout) PodLogs() string { return filepath.Join(l.AgentDir(), "logs", "pods") }

// Images holds image tarballs imported, and pinned, when the node starts.
func (l Layout) Images() string { return filepath.Join(l.AgentDir(), "images") }

// KubeletCerts is where the kubelet keeps the client certificates it gets
// through the CSR API (kubelet-client-current.pem).
func (l Layout) KubeletCerts() string { return filepath.Join(l.AgentDir(), "kubelet", "pki") }

// KubeletConfig is the kubelet configuration file hakube generates.
func (l Layout) KubeletConfig() string { return filepath.Join(l.AgentDir(), "etc", "kubelet.yaml") }

// CNIConf is the CNI configuration directory containerd reads.
func (l Layout) CNIConf() string { return filepath.Join(l.AgentDir(), "etc", "cni", "net.d") }

// CNIState is where host-local keeps the pod IPs it handed out.
func (l Layout) CNIState() string { return filepath.Join(l.AgentDir(), "cni", "networks") }

// FlannelNetConf is flannel's network configuration.
func (l Layout) FlannelNetConf() string {
	return filepath.Join(l.AgentDir(), "etc", "flannel", "net-conf.json")
}

// FlannelSubnet is flannel's lease of this node's pod subnet.
func (l Layout) FlannelSubnet() string {
	return filepath.Join(l.AgentDir(), "run", "flannel", "subnet.env")
}
