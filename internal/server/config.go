// Package server assembles a hakube server from its components and runs it.
package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/datastore/external"
	"github.com/hakube/hakube/internal/datastore/kine"
	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/identity"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/token"
)

// Config is what a user chooses for a server, as flags. Validate it, then Run.
type Config struct {
	DataDir          string
	NodeName         string
	NodeIP           string
	AdvertiseAddress string
	BindAddress      string
	HTTPSPort        int
	TLSSANs          []string
	ClusterCIDR      string
	ServiceCIDR      string
	ClusterDNS       string
	ClusterDomain    string

	// ClusterInit starts a new cluster on the embedded Datastore ("etcd", the
	// default, or "dqlite"). A Datastore other than the kind of this server's
	// data moves the data into it ("sqlite" without ClusterInit).
	ClusterInit bool
	Datastore   string
	// Server is the URL of a server of the cluster to join.
	Server string
	// ClusterReset makes this server the only member of its cluster after a
	// quorum loss, with its data or, given ClusterResetRestorePath (a file,
	// or a snapshot's name), a snapshot's.
	ClusterReset            bool
	ClusterResetRestorePath string
	// EtcdArgs are embedded etcd settings as key=value.
	EtcdArgs []string
	// ExposeMetrics serves the datastore's and supervisor's metrics on the
	// node IP as well as on loopback.
	ExposeMetrics bool
	// EnablePprof serves Go's profiles on the loopback metrics listener.
	EnablePprof bool
	// SecretsEncryption creates a new cluster with Secrets encrypted at
	// rest; afterwards the cluster's keys decide (docs/security.md).
	SecretsEncryption bool

	// Token is the join token as given (flag or environment); TokenFile names a file holding it.
	Token     string
	TokenFile string
	// AgentToken (or the file AgentTokenFile holds) is what agents join with
	// instead of Token; it gets a node its credentials and nothing else.
	AgentToken     string
	AgentTokenFile string

	DatastoreEndpoint string
	DatastoreCAFile   string
	DatastoreCertFile string
	DatastoreKeyFile  string

	WriteKubeconfig     string
	WriteKubeconfigMode string

	KubeAPIServerArgs         []string
	KubeControllerManagerArgs []string
	KubeSchedulerArgs         []string

	// Scheduled snapshots of an embedded etcd or Dqlite datastore; SnapshotDir
	// defaults to <data-dir>/server/db/snapshots.
	SnapshotSchedule  string
	SnapshotRetention int
	SnapshotDir       string
	DisableSnapshots  bool
	// S3 receives copies of scheduled snapshots, and is where a restore
	// looks for a snapshot name it does not find locally.
	S3 snapshot.S3Config

	// DisableAgent runs the control plane alone; otherwise the server is a
	// node too, configured by Node.
	DisableAgent bool
	Node         agent.NodeConfig
}

// NewConfig returns a Config holding the defaults.
func NewConfig() Config {
	return Config{
		DataDir:             "/var/lib/hakube",
		BindAddress:         "0.0.0.0",
		HTTPSPort:           6443,
		ClusterCIDR:         "10.42.0.0/16",
		ServiceCIDR:         "10.43.0.0/16",
		ClusterDNS:          "10.43.0.10",
		ClusterDomain:       "cluster.local",
		WriteKubeconfig:     "/etc/hakube/hakube.yaml",
		WriteKubeconfigMode: "0600",
		SnapshotSchedule:    "0 */12 * * *",
		SnapshotRetention:   5,
		S3:                  snapshot.NewS3Config(),
		Node:                agent.NewNodeConfig(),
	}
}

// layout names the paths under the data dir.
func (c Config) layout() layout.Layout { return layout.New(c.DataDir) }

// critical is the settings every server of the cluster must share, on
// datastore kind.
func (c Config) critical(kind datastore.Kind) bootstrap.Critical {
	return bootstrap.Critical{
		ClusterCIDR: c.ClusterCIDR, ServiceCIDR: c.ServiceCIDR, ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
		Datastore: string(kind),
	}
}

// snapshotDir is where scheduled snapshots go.
func (c Config) snapshotDir() string {
	if c.SnapshotDir != "" {
		return c.SnapshotDir
	}
	return c.layout().Snapshots()
}

func (c Config) snapshotConfig() snapshot.SchedulerConfig {
	return snapshot.SchedulerConfig{Schedule: c.SnapshotSchedule, Retention: c.SnapshotRetention,
		Dir: snapshot.Dir(c.snapshotDir()), Server: local.Datastore{Layout: c.layout()}, S3: c.S3}
}

// Validate checks every value and says which flag is wrong and how to fix it.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.DataDir == "" {
		add("--data-dir must not be empty")
	} else if !filepath.IsAbs(c.DataDir) {
		add("--data-dir %q must be an absolute path", c.DataDir)
	}
	if c.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
			add("--node-name %q is not a valid node name: %s", c.NodeName, strings.Join(msgs, "; "))
		}
	}
	for flag, v := range map[string]string{"--node-ip": c.NodeIP, "--advertise-address": c.AdvertiseAddress, "--bind-address": c.BindAddress} {
		if v != "" && net.ParseIP(v) == nil {
			add("%s %q is not an IP address", flag, v)
		}
	}
	for _, a := range c.KubeAPIServerArgs {
		if k, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "="); strings.HasPrefix(k, "encryption-provider-config") {
			add("--kube-apiserver-arg %q: hakube writes the apiserver's encryption configuration itself; use --secrets-encryption "+
				"(the cluster's keys, docs/security.md) instead", a)
		}
	}
	if c.HTTPSPort < 1 || c.HTTPSPort > 65534 {
		add("--https-listen-port %d must be between 1 and 65534 (the apiserver uses the next port)", c.HTTPSPort)
	}
	_, clusterNet, err := net.ParseCIDR(c.ClusterCIDR)
	if err != nil {
		add("--cluster-cidr %q is not a CIDR (for example 10.42.0.0/16)", c.ClusterCIDR)
	}
	_, serviceNet, err := net.ParseCIDR(c.ServiceCIDR)
	if err != nil {
		add("--service-cidr %q is not a CIDR (for example 10.43.0.0/16)", c.ServiceCIDR)
	}
	if clusterNet != nil && serviceNet != nil && (clusterNet.Contains(serviceNet.IP) || serviceNet.Contains(clusterNet.IP)) {
		add("--cluster-cidr %s and --service-cidr %s overlap; choose ranges that do not", c.ClusterCIDR, c.ServiceCIDR)
	}
	if dns := net.ParseIP(c.ClusterDNS); dns == nil {
		add("--cluster-dns %q is not an IP address", c.ClusterDNS)
	} else if serviceNet != nil && !serviceNet.Contains(dns) {
		add("--cluster-dns %s is outside --service-cidr %s", c.ClusterDNS, c.ServiceCIDR)
	}
	if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		add("--cluster-domain %q is not a valid domain: %s", c.ClusterDomain, strings.Join(msgs, "; "))
	}
	switch datastore.Kind(c.Datastore) {
	case "":
	case datastore.Etcd, datastore.Dqlite:
		if !c.ClusterInit {
			add("--datastore=%s goes with --cluster-init on the first server (or on the server that moves a cluster's data to %s); joining servers take the cluster's datastore and need no --datastore", c.Datastore, c.Datastore)
		}
	case datastore.SQLite:
		if c.ClusterInit || c.Server != "" {
			add("--datastore=sqlite is a single server's datastore: it does not go with --cluster-init or --server")
		}
	default:
		add("--datastore %q: use etcd (the default with --cluster-init), dqlite, or sqlite (the default of a single server)", c.Datastore)
	}
	if c.Datastore != "" && c.DatastoreEndpoint != "" {
		add("--datastore picks an embedded datastore; it does not go with --datastore-endpoint")
	}
	if c.ClusterInit && c.Server != "" {
		add("--cluster-init and --server both given: the first server uses --cluster-init, the others --server")
	}
	if (c.ClusterInit || c.Server != "") && c.DatastoreEndpoint != "" {
		add("--cluster-init and --server use the embedded etcd; servers on an external --datastore-endpoint share it and need neither")
	}
	if c.Server != "" {
		if _, err := join.NewClient(c.Server, token.Token{}); err != nil {
			add("%v", err)
		}
		if c.Token == "" && c.TokenFile == "" && !fsutil.Exists(c.layout().Token()) {
			add("--server needs the cluster's token: pass --token, --token-file, HAKUBE_TOKEN or K3S_TOKEN (it is in <data-dir>/server/token on the first server)")
		}
	}
	if !c.DisableAgent {
		if err := c.Node.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClusterResetRestorePath != "" && !c.ClusterReset {
		add("--cluster-reset-restore-path goes with --cluster-reset")
	}
	if c.ClusterReset {
		switch {
		case c.Server != "":
			add("--cluster-reset makes this server the only member of its cluster; it does not go with --server (the other servers use --server to join it afterwards)")
		case c.DatastoreEndpoint != "":
			add("--cluster-reset is for the embedded etcd or Dqlite datastore; an external --datastore-endpoint is restored with its own tools")
		case c.Datastore != "":
			add("--cluster-reset keeps the datastore's kind; move it with --datastore afterwards, once the cluster runs")
		}
		if c.ClusterResetRestorePath != "" && c.Token == "" && c.TokenFile == "" && !fsutil.Exists(c.layout().Token()) {
			add("--cluster-reset-restore-path needs the token of the cluster the snapshot was taken of: pass --token, --token-file, HAKUBE_TOKEN or K3S_TOKEN")
		}
	}
	if err := etcd.ValidateArgs(c.EtcdArgs); err != nil {
		errs = append(errs, err)
	}
	if c.Token != "" && c.TokenFile != "" {
		add("--token and --token-file both given; use one")
	}
	if c.Token != "" {
		if _, err := token.Parse(c.Token); err != nil {
			add("malformed token: %v", err)
		}
	}
	if c.AgentToken != "" && c.AgentTokenFile != "" {
		add("--agent-token and --agent-token-file both given; use one")
	}
	if c.AgentToken != "" {
		if _, err := token.Parse(c.AgentToken); err != nil {
			add("malformed --agent-token: %v", err)
		}
	}
	if _, err := parseMode(c.WriteKubeconfigMode); err != nil {
		add("--write-kubeconfig-mode: %v", err)
	}
	if c.WriteKubeconfig != "" && !filepath.IsAbs(c.WriteKubeconfig) {
		add("--write-kubeconfig %q must be an absolute path", c.WriteKubeconfig)
	}
	if _, err := pki.LeafLifetimes(); err != nil {
		errs = append(errs, err)
	}
	if !c.DisableSnapshots {
		if err := c.snapshotConfig().Validate(); err != nil {
			errs = append(errs, err)
		}
	} else if err := c.S3.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.SnapshotDir != "" && !filepath.IsAbs(c.SnapshotDir) {
		add("--etcd-snapshot-dir %q must be an absolute path", c.SnapshotDir)
	}
	if err := c.validateDatastore(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Config) validateDatastore() error {
	ep := c.DatastoreEndpoint
	switch {
	case ep == "":
		if c.DatastoreCAFile != "" || c.DatastoreCertFile != "" || c.DatastoreKeyFile != "" {
			return errors.New("--datastore-cafile/certfile/keyfile need --datastore-endpoint")
		}
		return nil
	case external.IsEtcdURL(ep):
		return c.etcdConfig().Validate()
	default:
		return kine.ValidateURL(ep)
	}
}

// etcdMember configures this server's embedded etcd member.
func (c Config) etcdMember(id identity.Identity) etcd.Config {
	l := id.Layout
	return etcd.Config{Dir: l.Etcd(), NodeName: id.Name, NodeIP: id.IP, TLSDir: l.TLS(), Args: c.EtcdArgs}
}

func (c Config) etcdConfig() external.Config {
	return external.Config{Endpoints: c.DatastoreEndpoint, CAFile: c.DatastoreCAFile, CertFile: c.DatastoreCertFile, KeyFile: c.DatastoreKeyFile}
}

func parseMode(s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode such as 0600 or 0644", s)
	}
	return os.FileMode(m), nil
}
