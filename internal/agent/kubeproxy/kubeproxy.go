// Package kubeproxy runs kube-proxy of k8s.io/kubernetes in this process, in
// iptables mode.
package kubeproxy

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/agent/inprocess"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
)

// Config is one node's kube-proxy.
type Config struct {
	Layout   layout.Layout
	NodeName string
	// Cluster is read at Start: the node learns it with its credentials.
	Cluster func() join.NodeCluster
	// ExtraArgs are --key=value flags from --kube-proxy-arg, applied last.
	ExtraArgs []string
}

// Proxy is the component.
type Proxy struct {
	cfg Config
	inprocess.Daemon
}

// New returns the component.
func New(cfg Config) *Proxy { return &Proxy{cfg: cfg} }

func (p *Proxy) Name() string { return "kube-proxy" }

// Init checks the user's flags before anything starts.
func (p *Proxy) Init(context.Context) error {
	_, err := p.options(join.NodeCluster{ClusterCIDR: "10.42.0.0/16"})
	return err
}

func (p *Proxy) options(c join.NodeCluster) (*proxyapp.Options, error) {
	o := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	o.AddFlags(fs)
	args := append([]string{
		"--kubeconfig=" + p.cfg.Layout.AgentKubeconfig(credentials.Proxy),
		"--hostname-override=" + p.cfg.NodeName,
		"--proxy-mode=iptables",
		"--cluster-cidr=" + c.ClusterCIDR,
	}, p.cfg.ExtraArgs...)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("--kube-proxy-arg: %w (the flags are kube-proxy's, without the leading --)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("--kube-proxy-arg: %q is not key=value", fs.Args()[0])
	}
	if err := o.Complete(fs); err != nil {
		return nil, fmt.Errorf("--kube-proxy-arg: %w", err)
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("--kube-proxy-arg: %w", err)
	}
	return o, nil
}

// Start runs kube-proxy.
func (p *Proxy) Start(context.Context) error {
	o, err := p.options(p.cfg.Cluster())
	if err != nil {
		return err
	}
	p.Run(o.Run)
	return nil
}
