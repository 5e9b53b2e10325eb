// Package agent is the node role: the components that make a machine a
// Kubernetes node (credentials, the registry mirror of its imported images,
// containerd, images, the kubelet, the pod network, kube-proxy), run by `hakube agent` and appended to a server's
// own components when the server is a node too. Either way the node gets its
// credentials from a supervisor with the token, as a remote agent does.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/agent/containerd"
	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/agent/flannel"
	"github.com/hakube/hakube/internal/agent/images"
	"github.com/hakube/hakube/internal/agent/kubelet"
	"github.com/hakube/hakube/internal/agent/kubeproxy"
	"github.com/hakube/hakube/internal/agent/mirror"
	"github.com/hakube/hakube/internal/checkconfig"
	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/identity"
	"github.com/hakube/hakube/internal/kubeconfig"
)

// DefaultDataDir is where a node keeps its state unless told otherwise.
const DefaultDataDir = "/var/lib/hakube"

// DefaultPauseImage is the sandbox image hakube builds and ships beside the
// binary (bin/images/pause.tar).
const DefaultPauseImage = "docker.io/hakube/pause:3.10"

// NodeConfig is what a user chooses for a node, on either role.
type NodeConfig struct {
	NodeLabels, NodeTaints     []string
	KubeletArgs, KubeProxyArgs []string
	FlannelBackend             string
	FlannelIface               string
	// ContainerRuntimeEndpoint is an existing CRI runtime to use instead of
	// hakube's containerd.
	ContainerRuntimeEndpoint string
	PauseImage               string
	// BinDir holds runc, the shim, the CNI plugins and the shipped images;
	// default the directory of the hakube binary.
	BinDir string
	// PrivateRegistry is a registries.yaml (K3s's format: mirrors, auth,
	// TLS); a missing file is none.
	PrivateRegistry string
}

// DefaultPrivateRegistry is where a node looks for registries.yaml.
const DefaultPrivateRegistry = "/etc/hakube/registries.yaml"

// NewNodeConfig returns the defaults.
func NewNodeConfig() NodeConfig {
	return NodeConfig{FlannelBackend: "vxlan", PauseImage: DefaultPauseImage, PrivateRegistry: DefaultPrivateRegistry}
}

// Validate says which flag is wrong and how to fix it.
func (c NodeConfig) Validate() error {
	var errs []error
	if err := (flannel.Config{Backend: c.FlannelBackend}).Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, l := range c.NodeLabels {
		if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("--node-label %q must be key=value", l))
		}
	}
	for _, t := range c.NodeTaints {
		if kv, effect, ok := strings.Cut(t, ":"); !ok || kv == "" ||
			(effect != "NoSchedule" && effect != "PreferNoSchedule" && effect != "NoExecute") {
			errs = append(errs, fmt.Errorf("--node-taint %q must be key=value:Effect, Effect one of NoSchedule, PreferNoSchedule, NoExecute", t))
		}
	}
	if c.ContainerRuntimeEndpoint != "" && !strings.HasPrefix(c.ContainerRuntimeEndpoint, "unix://") {
		errs = append(errs, fmt.Errorf("--container-runtime-endpoint %q must be a unix:// socket", c.ContainerRuntimeEndpoint))
	}
	if c.BinDir != "" && !filepath.IsAbs(c.BinDir) {
		errs = append(errs, fmt.Errorf("--bin-dir %q must be an absolute path", c.BinDir))
	}
	return errors.Join(errs...)
}

// Node is one node to run: the user's choices, its identity, and where it
// gets its credentials and reaches the API.
type Node struct {
	NodeConfig
	ID identity.Identity
	// JoinURL is the supervisor the node gets its credentials from;
	// APIServer is what its daemons' kubeconfigs name.
	JoinURL, APIServer string
}

// Components are the node's components, in start order, and the kube-proxy
// kubeconfig's path (a client that may read the cluster's endpoints).
func (n Node) Components() ([]component.Component, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	binDir := n.BinDir
	if binDir == "" {
		binDir = filepath.Dir(exe)
	}
	l := n.ID.Layout
	creds := credentials.New(credentials.Config{
		Server: n.JoinURL, Token: n.ID.Token, Name: n.ID.Name, IPs: []net.IP{n.ID.IP}, Layout: l, APIServer: n.APIServer,
	})
	cs := []component.Component{hostCheck{}, creds}
	endpoint := n.ContainerRuntimeEndpoint
	if endpoint == "" {
		endpoint = "unix://" + l.ContainerdSocket()
		imp := images.New(images.Config{Dirs: []string{filepath.Join(binDir, "images"), l.Images()}, Socket: l.ContainerdSocket(),
			Namespace: containerd.Namespace, Snapshotter: "overlayfs"})
		m := mirror.New(mirror.Config{Socket: l.ContainerdSocket(), Namespace: containerd.Namespace, Imported: imp.Imported})
		cs = append(cs, m,
			containerd.New(containerd.Config{Layout: l, BinDir: binDir, PauseImage: n.PauseImage, Executable: exe, Registries: n.PrivateRegistry,
				Mirror: m.Host}),
			imp)
	} else {
		klog.Infof("node: using the container runtime at %s; images in %s are not imported", endpoint, l.Images())
	}
	return append(cs,
		kubelet.New(kubelet.Config{Layout: l, NodeName: n.ID.Name, NodeIP: n.ID.IP, RuntimeEndpoint: endpoint, Cluster: creds.Cluster,
			Labels: n.NodeLabels, Taints: n.NodeTaints, ExtraArgs: flagArgs(n.KubeletArgs)}),
		flannel.New(flannel.Config{Layout: l, NodeName: n.ID.Name, NodeIP: n.ID.IP, Iface: n.FlannelIface, Backend: n.FlannelBackend, Cluster: creds.Cluster}),
		kubeproxy.New(kubeproxy.Config{Layout: l, NodeName: n.ID.Name, Cluster: creds.Cluster, ExtraArgs: flagArgs(n.KubeProxyArgs)}),
		&nodeReady{name: n.ID.Name, kubeconfig: l.AgentKubeconfig(credentials.Kubelet)},
	), nil
}

// flagArgs turns key=value pass-through values into --key=value flags.
func flagArgs(kvs []string) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, "--"+strings.TrimPrefix(kv, "--"))
	}
	return out
}

// nodeReady waits, a bounded time, for the node to be Ready, and says so:
// the last progress line of a node's start.
type nodeReady struct {
	name, kubeconfig string
	start            time.Time
	cancel           context.CancelFunc
}

// readyWait bounds the wait: a node that is slow to be Ready (a pod network
// coming up) must not hold back a server's start; the node is watched on.
const readyWait = time.Minute

func (r *nodeReady) Name() string               { return "node ready" }
func (r *nodeReady) Init(context.Context) error { r.start = time.Now(); return nil }
func (r *nodeReady) Start(context.Context) error {
	return nil
}

func (r *nodeReady) Ready(ctx context.Context) error {
	cs, err := kubeconfig.Client(r.kubeconfig)
	if err != nil {
		return err
	}
	wait, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	why, err := waitReady(wait, cs, r.name)
	if err == nil {
		klog.Infof("node: %s is Ready (%s after the start)", r.name, time.Since(r.start).Round(time.Millisecond))
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	klog.Warningf("node: %s is not Ready after %s (%s); going on, and watching it", r.name, readyWait, why)
	watch, stop := context.WithCancel(context.Background())
	r.cancel = stop
	go func() {
		if _, err := waitReady(watch, cs, r.name); err == nil {
			klog.Infof("node: %s is Ready (%s after the start)", r.name, time.Since(r.start).Round(time.Millisecond))
		}
	}()
	return nil
}

func (r *nodeReady) Stop() error {
	if r.cancel != nil {
		r.cancel()
	}
	return nil
}

// waitReady polls the node until it is Ready; on failure it says why not.
func waitReady(ctx context.Context, cs kubernetes.Interface, name string) (string, error) {
	why := "not registered"
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return "", nil
					}
					why = c.Reason + ": " + c.Message
				}
			}
		}
		select {
		case <-ctx.Done():
			return why, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// hostCheck fails a node whose machine lacks what it needs (hakube
// check-config's findings), with how to get it, before anything starts:
// better than a kubelet's or flannel's error half way.
type hostCheck struct{}

func (hostCheck) Name() string { return "host check" }

func (hostCheck) Init(context.Context) error {
	var missing []string
	for _, f := range checkconfig.Machine().Check() {
		switch f.Level {
		case checkconfig.Missing:
			missing = append(missing, fmt.Sprintf("%s: %s (fix: %s)", f.Name, f.Detail, f.Fix))
		case checkconfig.Warning:
			klog.Warningf("node: %s: %s (%s)", f.Name, f.Detail, f.Fix)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("this machine cannot be a node: %s; hakube check-config lists every check (or run the server with --disable-agent)", strings.Join(missing, "; "))
	}
	return nil
}

func (hostCheck) Start(context.Context) error { return nil }
func (hostCheck) Stop() error                 { return nil }
