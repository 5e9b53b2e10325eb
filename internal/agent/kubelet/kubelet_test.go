package kubelet

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
)

func newKubelet(t *testing.T, extra ...string) *Kubelet {
	l := layout.New(t.TempDir())
	return New(Config{Layout: l, NodeName: "node-1", NodeIP: net.ParseIP("192.0.2.1"), RuntimeEndpoint: "unix:///run/x.sock",
		Cluster: func() join.NodeCluster {
			return join.NodeCluster{ClusterDNS: "10.43.0.10", ClusterDomain: "example.local"}
		},
		Labels: []string{"zone=a"}, Taints: []string{"dedicated=db:NoSchedule"},
		ExtraArgs: extra})
}

// TestConfiguration: the generated file, then hakube's flags, then the
// user's --kubelet-arg, each overriding the one before.
func TestConfiguration(t *testing.T) {
	k := newKubelet(t, "--cgroup-root=/node-1", "--max-pods=50", "--root-dir=/var/lib/kubelet-1", "--cluster-domain=override.local")
	if err := k.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := fsutil.WriteFile(k.cfg.Layout.KubeletConfig(), []byte(k.configFile()), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := k.server(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case s.FailCgroupV1 || s.CgroupDriver != "cgroupfs":
		t.Errorf("cgroup v1 refused or driver %q", s.CgroupDriver)
	case s.ClusterDNS[0] != "10.43.0.10":
		t.Errorf("cluster DNS %v", s.ClusterDNS)
	case s.ClusterDomain != "override.local" || s.CgroupRoot != "/node-1" || s.MaxPods != 50 || s.RootDirectory != "/var/lib/kubelet-1":
		t.Errorf("--kubelet-arg did not override: domain %q, cgroup root %q, max pods %d, root dir %q", s.ClusterDomain, s.CgroupRoot, s.MaxPods, s.RootDirectory)
	case s.HostnameOverride != "node-1" || s.NodeIP != "192.0.2.1" || s.NodeLabels["zone"] != "a" || len(s.RegisterWithTaints) != 1:
		t.Errorf("node flags: name %q, ip %q, labels %v, taints %v", s.HostnameOverride, s.NodeIP, s.NodeLabels, s.RegisterWithTaints)
	case s.Authentication.Anonymous.Enabled:
		t.Error("anonymous requests to the kubelet are allowed")
	case s.PodLogsDir != k.cfg.Layout.PodLogs():
		t.Errorf("pod logs in %q", s.PodLogsDir)
	case !strings.HasSuffix(s.TLSCertFile, "agent/tls/serving-kubelet.crt"):
		t.Errorf("serving certificate %q", s.TLSCertFile)
	}
}

func TestBadArgs(t *testing.T) {
	for arg, want := range map[string]string{
		"--no-such-flag=1": "--kubelet-arg",
		"--max-pods=many":  "--kubelet-arg",
		"stray":            "not key=value",
	} {
		err := newKubelet(t, arg).Init(context.Background())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error saying %q, got %v", arg, want, err)
		}
	}
	k := newKubelet(t)
	k.cfg.Labels = []string{"node-role.kubernetes.io/control-plane=true"}
	if err := k.Init(context.Background()); err == nil {
		t.Error("a label the kubelet may not set on itself was accepted")
	}
}
