package cli

import (
	"errors"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/agent/flannel"
	"github.com/hakube/hakube/internal/runner"
)

func newAgentCommand() *cobra.Command {
	cfg := agent.NewConfig()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node that joins a cluster's servers",
		Long: `Run a Kubernetes node: containerd, the kubelet, the pod network (flannel) and
kube-proxy, joined to the cluster through a server.

The agent checks the server's CA against the token before it trusts it or sends
anything, and receives only a node's certificates; its keys stay on the machine.
The token is taken from --token, --token-file, HAKUBE_TOKEN or K3S_TOKEN, in that
order (a server keeps it in <data-dir>/server/token). The agent reaches the
servers through a load balancer on 127.0.0.1:--lb-server-port that learns every
server, so it keeps working when the server in --server is down.

Images in <data-dir>/agent/images (*.tar, *.tar.gz, *.tar.zst: OCI layout or
docker-archive) are imported when the node starts and pinned.`,
		Example: `  HAKUBE_TOKEN=SECRET hakube agent --server https://<server>:6443

  # a second node on a machine that runs a node already (labs): its own data dir, name,
  # kubelet root and cgroup root, and a load balancer port the server's apiserver (6444) does not use
  hakube agent --server https://<server>:6443 --token-file token --data-dir /var/lib/hakube-2 \
    --node-name node-2 --kubelet-arg root-dir=/var/lib/hakube-2/kubelet --kubelet-arg cgroup-root=/node-2 \
    --lb-server-port 6445`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Token == "" && cfg.TokenFile == "" {
				cfg.Token = firstEnv("HAKUBE_TOKEN", "K3S_TOKEN")
			}
			err := agent.Run(cmd.Context(), cfg)
			if errors.Is(err, runner.ErrRestart) {
				return runner.Restart()
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.Server, "server", "s", "", "URL of a server of the cluster, https://<server>:6443 (required)")
	f.StringVarP(&cfg.Token, "token", "t", "", "the cluster's token (env HAKUBE_TOKEN or K3S_TOKEN)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file holding the token")
	f.StringVarP(&cfg.DataDir, "data-dir", "d", cfg.DataDir, "directory for the node's state")
	f.StringVar(&cfg.NodeName, "node-name", "", "node name (default: the hostname)")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "IP address of this node (default: the address of the default-route interface)")
	f.IntVar(&cfg.LBPort, "lb-server-port", cfg.LBPort, "port on 127.0.0.1 of the load balancer the node reaches the servers through")
	addNodeFlags(f, &cfg.NodeConfig)
	return cmd
}

// addNodeFlags are the flags of a node, on servers and agents alike.
func addNodeFlags(f *pflag.FlagSet, c *agent.NodeConfig) {
	f.StringArrayVar(&c.NodeLabels, "node-label", nil, "label the node registers with, key=value (repeatable)")
	f.StringArrayVar(&c.NodeTaints, "node-taint", nil, "taint the node registers with, key=value:Effect (repeatable)")
	f.StringArrayVar(&c.KubeletArgs, "kubelet-arg", nil, "extra flag for the kubelet, as key=value (repeatable)")
	f.StringArrayVar(&c.KubeProxyArgs, "kube-proxy-arg", nil, "extra flag for kube-proxy, as key=value (repeatable)")
	f.StringVar(&c.FlannelBackend, "flannel-backend", c.FlannelBackend, "pod network between nodes: "+joinOr(flannel.Backends))
	f.StringVar(&c.FlannelIface, "flannel-iface", "", "interface (name or IP) pod traffic between nodes uses (default: the node IP's)")
	f.StringVar(&c.ContainerRuntimeEndpoint, "container-runtime-endpoint", "", "use this CRI runtime (unix://...) instead of hakube's containerd")
	f.StringVar(&c.PauseImage, "pause-image", c.PauseImage, "pod sandbox image")
	f.StringVar(&c.PrivateRegistry, "private-registry", c.PrivateRegistry, "registries.yaml (K3s's format: mirrors, auth, TLS) for pulls; a missing file is none")
	f.StringVar(&c.BinDir, "bin-dir", "", "directory of runc, containerd-shim-runc-v2, cni/ and images/ (default: the hakube binary's directory)")
}

func joinOr(s []string) string {
	out := ""
	for i, v := range s {
		switch {
		case i == 0:
		case i == len(s)-1:
			out += " or "
		default:
			out += ", "
		}
		out += v
	}
	return out
}
