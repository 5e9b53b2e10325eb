// Package flannel gives the node its pod network: flannel (as a library,
// with the Kubernetes subnet manager) routes each node's pod CIDR to the
// others over VXLAN or host routes, and a bridge CNI configuration on the
// node's pod CIDR puts pods on it.
package flannel

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flannel-io/flannel/pkg/backend"
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw" // the host-gw backend
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"  // the vxlan backend
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/layout"
)

// Backends are the values of --flannel-backend.
var Backends = []string{"vxlan", "host-gw", "none"}

// bridge is the CNI bridge pods are attached to.
const bridge = "cni0"

// Config is one node's pod network.
type Config struct {
	Layout   layout.Layout
	NodeName string
	NodeIP   net.IP
	// Iface carries traffic between nodes (a name or an IP); default the
	// node IP's interface.
	Iface string
	// Backend is vxlan, host-gw or none (pod routes are someone else's).
	Backend string
	// Cluster is read at Start: the node learns it with its credentials.
	Cluster func() join.NodeCluster
}

// Validate checks the backend.
func (c Config) Validate() error {
	for _, b := range Backends {
		if c.Backend == b {
			return nil
		}
	}
	return fmt.Errorf("--flannel-backend %q: use one of %s", c.Backend, strings.Join(Backends, ", "))
}

// Network is the component.
type Network struct {
	cfg    Config
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns the component.
func New(cfg Config) *Network { return &Network{cfg: cfg} }

func (n *Network) Name() string { return "pod network" }

func (n *Network) Init(context.Context) error { return n.cfg.Validate() }

// Start waits for the node's pod CIDR, starts flannel and writes the CNI
// configuration.
func (n *Network) Start(ctx context.Context) error {
	podCIDR, err := n.podCIDR(ctx)
	if err != nil {
		return err
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	mtu := 1500
	if n.cfg.Backend != "none" {
		if mtu, err = n.startFlannel(ctx); err != nil {
			return fmt.Errorf("flannel: %w", err)
		}
	}
	if err := n.writeCNI(podCIDR, mtu); err != nil {
		return err
	}
	klog.Infof("node: pod network up (%s, pod CIDR %s, MTU %d)", n.cfg.Backend, podCIDR, mtu)
	return nil
}

// Stop ends flannel's loops.
func (n *Network) Stop() error {
	if n.cancel != nil {
		n.cancel()
		n.wg.Wait()
	}
	return nil
}

// podCIDR waits until the node has registered and the controller manager
// gave it a pod CIDR.
func (n *Network) podCIDR(ctx context.Context) (string, error) {
	cs, err := kubeconfig.Client(n.cfg.Layout.AgentKubeconfig(credentials.Network))
	if err != nil {
		return "", err
	}
	start, last := time.Now(), time.Now()
	for {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			klog.Infof("node: registered as %s (%s)", n.cfg.NodeName, time.Since(start).Round(time.Millisecond))
			return node.Spec.PodCIDR, nil
		}
		if time.Since(last) > 15*time.Second {
			why := "no pod CIDR yet"
			if err != nil {
				why = err.Error()
			}
			klog.Infof("node: waiting for node %s to register and get a pod CIDR (%s so far): %s", n.cfg.NodeName, time.Since(start).Round(time.Second), why)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startFlannel does what flannel's main does with the Kubernetes subnet
// manager, and returns the MTU pods get.
func (n *Network) startFlannel(ctx context.Context) (int, error) {
	l := n.cfg.Layout
	c := n.cfg.Cluster()
	netConf, _ := json.Marshal(map[string]any{"Network": c.ClusterCIDR, "Backend": map[string]string{"Type": n.cfg.Backend}})
	if err := fsutil.WriteFile(l.FlannelNetConf(), netConf, 0o644); err != nil {
		return 0, err
	}
	// The subnet manager takes the node's name from the environment.
	if err := os.Setenv("NODE_NAME", n.cfg.NodeName); err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	// Until it has started, flannel ends with the start (its informers wait
	// up to 10 minutes to sync); after, with Stop.
	defer context.AfterFunc(ctx, cancel)()
	sm, err := kube.NewSubnetManager(runCtx, "", l.AgentKubeconfig(credentials.Network), "flannel.alpha.coreos.com", l.FlannelNetConf(), false)
	if err != nil {
		return 0, err
	}
	config, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return 0, err
	}
	iface := n.cfg.Iface
	if iface == "" {
		iface = n.cfg.NodeIP.String()
	}
	ext, err := ipmatch.LookupExtIface(iface, "", "", 0, ipmatch.PublicIPOpts{})
	if err != nil {
		return 0, fmt.Errorf("the interface for pod traffic (%s): %w; set --flannel-iface", iface, err)
	}
	tm := &iptables.IPTablesManager{}
	if err := tm.Init(runCtx); err != nil {
		return 0, fmt.Errorf("iptables: %w (hakube check-config says what is missing)", err)
	}
	be, err := backend.NewManager(runCtx, sm, ext).GetBackend(config.BackendType)
	if err != nil {
		return 0, err
	}
	bn, err := be.RegisterNetwork(runCtx, &n.wg, config)
	if err != nil {
		return 0, err
	}
	lease := bn.Lease()
	// The rules of the subnet and network this node had before are replaced.
	prevNet, prevSubnet := prevCIDR(l.FlannelSubnet(), "FLANNEL_NETWORK"), prevCIDR(l.FlannelSubnet(), "FLANNEL_SUBNET")
	if err := tm.SetupAndEnsureMasqRules(runCtx, config.Network, prevSubnet, prevNet, config.IPv6Network, ip.IP6Net{}, ip.IP6Net{}, lease, 60, false); err != nil {
		return 0, fmt.Errorf("masquerade rules: %w", err)
	}
	tm.SetupAndEnsureForwardRules(runCtx, config.Network, config.IPv6Network, 60)
	if err := subnet.WriteSubnetFile(l.FlannelSubnet(), config, true, lease.Subnet, lease.IPv6Subnet, bn.MTU()); err != nil {
		return 0, err
	}
	n.wg.Add(2)
	go func() { defer n.wg.Done(); bn.Run(runCtx) }()
	go func() {
		defer n.wg.Done()
		if err := sm.CompleteLease(runCtx, lease, &n.wg); err != nil && runCtx.Err() == nil {
			klog.Errorf("flannel: %v", err)
		}
	}()
	return bn.MTU(), nil
}

// writeCNI writes the bridge configuration on the node's pod CIDR. flannel's
// rules masquerade what leaves the cluster CIDR, so the bridge does not.
func (n *Network) writeCNI(podCIDR string, mtu int) error {
	l := n.cfg.Layout
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "hakube",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isDefaultGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": %d,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
`, bridge, mtu, l.CNIState(), podCIDR)
	path := l.CNIConf() + "/10-hakube.conflist"
	if old, err := os.ReadFile(path); err == nil && !strings.Contains(string(old), fmt.Sprintf("%q", podCIDR)) {
		// The node was given another pod CIDR (it was deleted and came back):
		// the bridge and the IPs handed out belong to the old one.
		klog.Infof("node: the pod CIDR changed to %s: removing the old bridge and pod IPs", podCIDR)
		if link, err := netlink.LinkByName(bridge); err == nil {
			_ = netlink.LinkDel(link)
		}
		if err := os.RemoveAll(l.CNIState()); err != nil {
			return err
		}
	}
	return fsutil.WriteFile(path, []byte(conf), 0o644)
}

// prevCIDR is an IPv4 CIDR of the subnet file flannel wrote last (zero when
// there is none).
func prevCIDR(path, key string) ip.IP4Net {
	b, err := os.ReadFile(path)
	if err != nil {
		return ip.IP4Net{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			if _, n, err := net.ParseCIDR(strings.TrimSpace(v)); err == nil && n.IP.To4() != nil {
				return ip.FromIPNet(n)
			}
		}
	}
	return ip.IP4Net{}
}

// enableForwarding: pods' traffic is routed through the node.
func enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enabling IP forwarding: %w (sysctl -w net.ipv4.ip_forward=1)", err)
	}
	klog.Infof("node: enabled IP forwarding (net.ipv4.ip_forward=1)")
	return nil
}
