package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/agent/loadbalancer"
	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/datadir"
	"github.com/hakube/hakube/internal/identity"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/runner"
	"github.com/hakube/hakube/internal/token"
)

// DefaultLBPort is the agent's client-side load balancer's port on loopback.
const DefaultLBPort = 6444

// Config is what a user chooses for an agent, as flags.
type Config struct {
	NodeConfig
	// Server is a server's supervisor, https://<server>:6443.
	Server           string
	DataDir          string
	Token, TokenFile string
	NodeName, NodeIP string
	// LBPort is the client-side load balancer's port on 127.0.0.1.
	LBPort int
}

// NewConfig returns the defaults.
func NewConfig() Config {
	return Config{NodeConfig: NewNodeConfig(), DataDir: DefaultDataDir, LBPort: DefaultLBPort}
}

// Validate says which flag is wrong and how to fix it.
func (c Config) Validate() error {
	errs := []error{c.NodeConfig.Validate()}
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Server == "" {
		add("--server is required: the URL of a server of the cluster, https://<server>:6443")
	} else if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		add("--server %q must be an https URL with a port, such as https://10.0.0.1:6443", c.Server)
	}
	if !filepath.IsAbs(c.DataDir) {
		add("--data-dir %q must be an absolute path", c.DataDir)
	}
	if c.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
			add("--node-name %q is not a valid node name: %s", c.NodeName, strings.Join(msgs, "; "))
		}
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		add("--node-ip %q is not an IP address", c.NodeIP)
	}
	if c.LBPort < 1 || c.LBPort > 65535 {
		add("--lb-server-port %d is not a port", c.LBPort)
	}
	if _, err := pki.LeafLifetimes(); err != nil {
		errs = append(errs, err)
	}
	if c.Token == "" && c.TokenFile == "" {
		add("an agent needs the cluster's token: pass --token, --token-file, HAKUBE_TOKEN or K3S_TOKEN (a server keeps it in <data-dir>/server/token)")
	}
	return errors.Join(errs...)
}

func (c Config) token() (token.Token, error) {
	s, err := token.Given(c.Token, c.TokenFile, "token")
	if err != nil {
		return token.Token{}, err
	}
	t, err := token.Parse(strings.TrimSpace(s))
	if err != nil {
		return token.Token{}, fmt.Errorf("malformed token: %w", err)
	}
	return t, nil
}

// Run runs an agent until ctx ends or a component fails; it returns
// runner.ErrRestart when the agent must restart in place.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	lt, _ := pki.LeafLifetimes() // validated
	kubeconfig.FollowRenewals(lt.Window)
	tok, err := c.token()
	if err != nil {
		return err
	}
	l := layout.New(c.DataDir)
	id, err := identity.Resolve(c.NodeName, c.NodeIP, "", l, tok)
	if err != nil {
		return err
	}
	u, _ := url.Parse(c.Server)
	lb := loadbalancer.New(loadbalancer.Config{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.LBPort)), Server: u.Host, StatePath: l.Servers()})
	// The node reaches the cluster only through the load balancer, the
	// credentials too: a restarted agent whose --server is down still joins.
	node := Node{NodeConfig: c.NodeConfig, ID: id, JoinURL: lb.URL(), APIServer: lb.URL()}
	nodeComponents, err := node.Components()
	if err != nil {
		return err
	}
	components := append([]component.Component{&datadir.DataDir{Layout: l, Dirs: []string{l.AgentDir()}}, lb}, nodeComponents...)
	components = append(components, &serverWatch{lb: lb, kubeconfig: l.AgentKubeconfig(credentials.Proxy)})
	return runner.Run(ctx, runner.Config{
		Name:       "agent",
		Components: components,
		OnReady: func() error {
			klog.Infof("hakube agent is ready: node %s, servers %s", id.Name, strings.Join(lb.Servers(), ", "))
			return nil
		},
	})
}

// serverWatch keeps the load balancer's list of servers current from the
// cluster's `kubernetes` endpoints (every server's supervisor).
type serverWatch struct {
	lb         *loadbalancer.LoadBalancer
	kubeconfig string
	cancel     context.CancelFunc
}

func (w *serverWatch) Name() string               { return "server list" }
func (w *serverWatch) Init(context.Context) error { return nil }
func (w *serverWatch) Start(context.Context) error {
	cs, err := kubeconfig.Client(w.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.lb.Watch(ctx, cs)
	return nil
}

func (w *serverWatch) Stop() error {
	if w.cancel != nil {
		w.cancel()
	}
	return nil
}
