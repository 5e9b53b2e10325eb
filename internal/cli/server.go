package cli

import (
	"errors"
	"os"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/runner"
	"github.com/hakube/hakube/internal/server"
)

func newServerCommand() *cobra.Command {
	cfg := server.NewConfig()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane server",
		Long: `Run a Kubernetes control-plane server: kube-apiserver, kube-controller-manager
and kube-scheduler in one process, on an embedded SQLite datastore by default.
The server is a node too (containerd, the kubelet, the pod network and
kube-proxy; see hakube agent --help) unless --disable-agent is given; its node
is labelled node-role.kubernetes.io/control-plane.

The token is taken from --token, --token-file, HAKUBE_TOKEN or K3S_TOKEN, in that
order; without one a random token is generated and stored in
<data-dir>/server/token.`,
		Example: `  # a single server on the embedded SQLite datastore
  hakube server

  # a highly available cluster of three servers on embedded etcd
  HAKUBE_TOKEN=SECRET hakube server --cluster-init                       # server 1
  HAKUBE_TOKEN=SECRET hakube server --server https://<server1>:6443      # servers 2 and 3

  # a server on an external PostgreSQL database
  hakube server --datastore-endpoint 'postgres://user:pass@db:5432/kube'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Token == "" && cfg.TokenFile == "" {
				cfg.Token = firstEnv("HAKUBE_TOKEN", "K3S_TOKEN")
			}
			if cfg.AgentToken == "" && cfg.AgentTokenFile == "" {
				cfg.AgentToken = firstEnv("HAKUBE_AGENT_TOKEN", "K3S_AGENT_TOKEN")
			}
			err := server.Run(cmd.Context(), cfg)
			if errors.Is(err, runner.ErrRestart) {
				return runner.Restart()
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.DataDir, "data-dir", "d", cfg.DataDir, "directory for state and certificates")
	f.StringVar(&cfg.NodeName, "node-name", "", "node name (default: the hostname)")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "IP address of this node (default: the address of the default-route interface)")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "IP address the apiserver advertises to the cluster (default: --node-ip)")
	f.StringVar(&cfg.BindAddress, "bind-address", cfg.BindAddress, "address the HTTPS listener binds to")
	f.IntVar(&cfg.HTTPSPort, "https-listen-port", cfg.HTTPSPort, "port of the HTTPS listener (API and cluster endpoints); the apiserver uses the next port on loopback")
	f.StringSliceVar(&cfg.TLSSANs, "tls-san", nil, "extra host names or IP addresses for the serving certificate (repeatable)")
	f.StringVar(&cfg.ClusterCIDR, "cluster-cidr", cfg.ClusterCIDR, "IP range for pod IPs")
	f.StringVar(&cfg.ServiceCIDR, "service-cidr", cfg.ServiceCIDR, "IP range for service IPs")
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", cfg.ClusterDNS, "IP address of the cluster DNS service (inside --service-cidr)")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "cluster domain")
	f.BoolVar(&cfg.ClusterInit, "cluster-init", false, "start a new highly available cluster on embedded etcd (the first server)")
	f.StringVar(&cfg.Datastore, "datastore", "", "embedded datastore: etcd (default with --cluster-init), dqlite (SQLite replicated with Raft, with --cluster-init) "+
		"or sqlite (default of a single server); a server whose data is in another kind moves it there (docs/migrate.md)")
	f.StringVarP(&cfg.Server, "server", "s", "", "join the cluster of the server at this URL (https://<server>:6443), on embedded etcd")
	f.BoolVar(&cfg.ClusterReset, "cluster-reset", false, "after a quorum loss: make this server the only member of its cluster, keeping its data "+
		"(the other servers then rejoin with --server); refused a second time until the server has started without it")
	f.StringVar(&cfg.ClusterResetRestorePath, "cluster-reset-restore-path", "", "with --cluster-reset: restore this snapshot (a file, or a snapshot's name in "+
		"--etcd-snapshot-dir) instead of keeping this server's data; on a new machine, with the cluster's token")
	f.StringVarP(&cfg.Token, "token", "t", "", "shared secret used to join servers and agents (env HAKUBE_TOKEN or K3S_TOKEN)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file holding the token")
	f.StringVar(&cfg.AgentToken, "agent-token", "", "shared secret agents join with instead of the token: it gets a node its credentials, never "+
		"the servers' bootstrap data (env HAKUBE_AGENT_TOKEN or K3S_AGENT_TOKEN; kept in <data-dir>/server/agent-token)")
	f.StringVar(&cfg.AgentTokenFile, "agent-token-file", "", "file holding the agent token")
	f.StringVar(&cfg.DatastoreEndpoint, "datastore-endpoint", "", "external datastore: postgres://, mysql://, sqlite:// or https://etcd:2379[,...] (default: embedded SQLite)")
	f.StringVar(&cfg.DatastoreCAFile, "datastore-cafile", "", "CA file to verify an external etcd")
	f.StringVar(&cfg.DatastoreCertFile, "datastore-certfile", "", "client certificate for an external etcd")
	f.StringVar(&cfg.DatastoreKeyFile, "datastore-keyfile", "", "client key for an external etcd")
	f.StringVarP(&cfg.WriteKubeconfig, "write-kubeconfig", "o", cfg.WriteKubeconfig, "where to write the admin kubeconfig")
	f.StringVar(&cfg.WriteKubeconfigMode, "write-kubeconfig-mode", cfg.WriteKubeconfigMode, "file mode of the admin kubeconfig, in octal")
	f.StringArrayVar(&cfg.KubeAPIServerArgs, "kube-apiserver-arg", nil, "extra flag for kube-apiserver, as key=value (repeatable)")
	f.StringArrayVar(&cfg.KubeControllerManagerArgs, "kube-controller-manager-arg", nil, "extra flag for kube-controller-manager, as key=value (repeatable)")
	f.StringArrayVar(&cfg.KubeSchedulerArgs, "kube-scheduler-arg", nil, "extra flag for kube-scheduler, as key=value (repeatable)")
	f.StringVar(&cfg.SnapshotSchedule, "etcd-snapshot-schedule-cron", cfg.SnapshotSchedule, "when to snapshot the embedded etcd or Dqlite datastore (cron, or @every 6h)")
	f.IntVar(&cfg.SnapshotRetention, "etcd-snapshot-retention", cfg.SnapshotRetention, "how many scheduled snapshots to keep")
	f.StringVar(&cfg.SnapshotDir, "etcd-snapshot-dir", "", "directory of snapshots (default <data-dir>/server/db/snapshots)")
	f.StringArrayVar(&cfg.EtcdArgs, "etcd-arg", nil, "embedded etcd setting as key=value, named as in etcd's configuration file (repeatable)")
	f.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve Go's profiles at http://127.0.0.1:2381/debug/pprof/ (embedded etcd or Dqlite)")
	f.BoolVar(&cfg.ExposeMetrics, "etcd-expose-metrics", false, "serve the datastore's and supervisor's Prometheus metrics on <node-ip>:2381 too (always on 127.0.0.1:2381 with embedded etcd or Dqlite)")
	addS3Flags(f, &cfg.S3)
	f.BoolVar(&cfg.SecretsEncryption, "secrets-encryption", false, "create the cluster with Secrets encrypted at rest (secretbox, keys the servers share); "+
		"on a running cluster use 'hakube secrets-encrypt enable|disable|rotate-keys'")
	f.BoolVar(&cfg.DisableAgent, "disable-agent", false, "run the control plane alone: this server is not a node (no kubelet, containerd or pod network)")
	addNodeFlags(f, &cfg.Node)
	f.BoolVar(&cfg.DisableSnapshots, "etcd-disable-snapshots", false, "take no scheduled snapshots")
	return cmd
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
