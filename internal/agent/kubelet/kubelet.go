// Package kubelet runs the kubelet of k8s.io/kubernetes in this process,
// configured for the node: its generated configuration file first, then
// hakube's flags, then the user's --kubelet-arg, each overriding the one
// before (as upstream's flag precedence does).
package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	kubeletoptions "k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	"k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/agent/inprocess"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
)

// Config is one node's kubelet.
type Config struct {
	Layout   layout.Layout
	NodeName string
	NodeIP   net.IP
	// RuntimeEndpoint is the CRI socket (unix://...).
	RuntimeEndpoint string
	// Cluster is read at Start: the node learns it with its credentials.
	Cluster func() join.NodeCluster
	// Labels (key=value) and Taints (key=value:Effect) the node registers with.
	Labels, Taints []string
	// ExtraArgs are --key=value flags from --kubelet-arg, applied last.
	ExtraArgs []string
}

// Kubelet is the component.
type Kubelet struct {
	cfg Config
	inprocess.Daemon
}

// New returns the component.
func New(cfg Config) *Kubelet { return &Kubelet{cfg: cfg} }

func (k *Kubelet) Name() string { return "kubelet" }

// Init checks the user's flags before anything starts.
func (k *Kubelet) Init(context.Context) error {
	flags, _, err := k.parse(nil)
	if err != nil {
		return err
	}
	if err := kubeletoptions.ValidateKubeletFlags(flags); err != nil {
		return fmt.Errorf("--kubelet-arg, --node-label or --node-taint: %w", err)
	}
	return nil
}

// Start writes the configuration and runs the kubelet.
func (k *Kubelet) Start(ctx context.Context) error {
	if err := fsutil.WriteFile(k.cfg.Layout.KubeletConfig(), []byte(k.configFile()), 0o600); err != nil {
		return err
	}
	s, err := k.server(ctx)
	if err != nil {
		return err
	}
	if err := ensureCgroup(s.CgroupRoot); err != nil {
		return fmt.Errorf("creating the kubelet's cgroup root %s: %w", s.CgroupRoot, err)
	}
	deps, err := kubeletapp.UnsecuredDependencies(ctx, s, utilfeature.DefaultFeatureGate)
	if err != nil {
		return err
	}
	k.Run(func(ctx context.Context) error { return kubeletapp.Run(ctx, s, deps, utilfeature.DefaultFeatureGate) })
	return nil
}

// server is the kubelet's configuration: the file, then hakube's flags, then
// the user's.
func (k *Kubelet) server(ctx context.Context) (*kubeletoptions.KubeletServer, error) {
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, k.cfg.Layout.KubeletConfig())
	if err != nil {
		return nil, err
	}
	file, err := loader.Load(ctx)
	if err != nil {
		return nil, err
	}
	flags, cfg, err := k.parse(file)
	if err != nil {
		return nil, err
	}
	if len(cfg.FeatureGates) > 0 {
		// The gates are the process's: on a server the apiserver's too.
		if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
			return nil, fmt.Errorf("--kubelet-arg=feature-gates: %w", err)
		}
	}
	if err := kubeletoptions.ValidateKubeletFlags(flags); err != nil {
		return nil, fmt.Errorf("--kubelet-arg, --node-label or --node-taint: %w", err)
	}
	if err := validation.ValidateKubeletConfiguration(cfg, utilfeature.DefaultFeatureGate); err != nil {
		return nil, fmt.Errorf("kubelet configuration (with --kubelet-arg): %w", err)
	}
	return &kubeletoptions.KubeletServer{KubeletFlags: *flags, KubeletConfiguration: *cfg}, nil
}

// parse applies hakube's flags and the user's to file (or, at Init, to the
// defaults, to check them early).
func (k *Kubelet) parse(file *kubeletconfig.KubeletConfiguration) (*kubeletoptions.KubeletFlags, *kubeletconfig.KubeletConfiguration, error) {
	cfg := file
	if cfg == nil {
		var err error
		if cfg, err = kubeletoptions.NewKubeletConfiguration(); err != nil {
			return nil, nil, err
		}
	}
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(nopWriter{})
	flags := kubeletoptions.NewKubeletFlags()
	flags.AddFlags(fs)
	kubeletoptions.AddKubeletConfigFlags(fs, cfg)
	own := []string{
		"--kubeconfig=" + k.cfg.Layout.AgentKubeconfig(credentials.Kubelet),
		"--hostname-override=" + k.cfg.NodeName,
		"--cert-dir=" + k.cfg.Layout.KubeletCerts(),
		"--node-ip=" + k.cfg.NodeIP.String(),
	}
	if len(k.cfg.Labels) > 0 {
		own = append(own, "--node-labels="+strings.Join(k.cfg.Labels, ","))
	}
	if len(k.cfg.Taints) > 0 {
		own = append(own, "--register-with-taints="+strings.Join(k.cfg.Taints, ","))
	}
	if err := fs.Parse(own); err != nil {
		return nil, nil, fmt.Errorf("--node-label or --node-taint: %w", err)
	}
	if err := fs.Parse(k.cfg.ExtraArgs); err != nil {
		return nil, nil, fmt.Errorf("--kubelet-arg: %w (the flags are the kubelet's, without the leading --: see kubelet --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("--kubelet-arg: %q is not key=value", fs.Args()[0])
	}
	return flags, cfg, nil
}

// configFile is the node's kubelet configuration.
func (k *Kubelet) configFile() string {
	c := k.cfg.Cluster()
	tlsDir := k.cfg.Layout.AgentTLS()
	return fmt.Sprintf(`# Generated by hakube at every start: edits are lost; use --kubelet-arg.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 hosts are still common at the edge; the v1beta1 default refuses them.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: %q
clusterDNS: [%q]
clusterDomain: %q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
# The serving certificate comes from the cluster (POST /v1-hakube/node), so
# the apiserver verifies the kubelet by the server CA when it proxies logs,
# exec and port-forward.
tlsCertFile: %q
tlsPrivateKeyFile: %q
# The client certificate hakube issued at the join (in the kubeconfig) is
# renewed by the kubelet through the CSR API, with a new key, when 70-90%% of
# its life has passed; it keeps them in --cert-dir.
rotateCertificates: true
serverTLSBootstrap: false
failSwapOn: false
# Under the node's data dir, so several nodes can share a machine.
podLogsDir: %q
`, k.cfg.RuntimeEndpoint, c.ClusterDNS, c.ClusterDomain, tlsDir.Cert(pki.ClientCA),
		tlsDir.Cert(credentials.KubeletServing), tlsDir.Key(credentials.KubeletServing), k.cfg.Layout.PodLogs())
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// ensureCgroup creates a cgroup root the kubelet does not create itself: it
// must exist in every hierarchy before the kubelet starts (a node-specific
// parent lets several nodes share a machine).
func ensureCgroup(root string) error {
	if root == "" || root == "/" {
		return nil
	}
	const base = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err == nil {
		return os.MkdirAll(filepath.Join(base, root), 0o755) // cgroup v2
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "unified" {
			continue
		}
		dir := filepath.Join(base, e.Name(), root)
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// A new cpuset cgroup has no CPUs and no memory nodes: copy its parent's.
		if strings.Contains(e.Name(), "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := copyDown(filepath.Join(base, e.Name()), root, f); err != nil {
					return err
				}
			}
		}
	}
	klog.Infof("node: created the cgroup root %s", root)
	return nil
}

// copyDown copies file from each cgroup to its child, from the hierarchy's
// root down to root.
func copyDown(hier, root, file string) error {
	parts := strings.Split(strings.Trim(root, "/"), "/")
	dir := hier
	for _, p := range parts {
		v, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		dir = filepath.Join(dir, p)
		if cur, _ := os.ReadFile(filepath.Join(dir, file)); strings.TrimSpace(string(cur)) != "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, file), v, 0o644); err != nil {
			return err
		}
	}
	return nil
}
