package harness

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/layout"
)

// Agent is a hakube process of the agent role.
type Agent struct {
	*Process
	DataDir string
	// Server is the --server URL; TokenFile holds the token.
	Server, TokenFile string
}

// NodeArgs are what every node on a node host is given: its own cgroup
// parent (two kubelets under one parent remove each other's pods), a
// kube-proxy that leaves the machine-wide conntrack table size alone, and no
// registries.yaml but the test's (a missing file).
func (h *Host) NodeArgs() []string {
	return []string{"--kubelet-arg", "cgroup-root=" + h.CgroupParent(), "--kube-proxy-arg", "conntrack-max-per-core=0",
		"--private-registry", filepath.Join(h.node.root, "no-registries.yaml")}
}

// NodeServer prepares a server that is a node too, on this node host.
func (h *Host) NodeServer(t testing.TB, name string) *Server {
	t.Helper()
	if !h.IsNode() {
		h.EnableNode(t)
	}
	s := h.Server(t, name)
	s.Node = true
	s.Args = append(s.Args, h.NodeArgs()...)
	return s
}

// Agent prepares an agent on this node host that joins through server with
// the token in tokenFile; it is not started.
func (h *Host) Agent(t testing.TB, name string, server *Server, tokenFile string) *Agent {
	t.Helper()
	if !h.IsNode() {
		h.EnableNode(t)
	}
	dir := t.TempDir()
	a := &Agent{Process: newProcess(t, name, filepath.Join(dir, "agent.log")), DataDir: filepath.Join(dir, "data"), Server: server.URL(), TokenFile: tokenFile}
	a.Role, a.ReadyLine, a.readyTimeout = "agent", "hakube agent is ready", 3*time.Minute
	a.flags = func() []string {
		f := []string{"--data-dir", a.DataDir, "--server", a.Server}
		if a.TokenFile != "" {
			f = append(f, "--token-file", a.TokenFile)
		}
		return f
	}
	h.place(t, a.Process)
	a.Args = append(a.Args, h.NodeArgs()...)
	return a
}

// Layout names the paths in the agent's data dir.
func (a *Agent) Layout() layout.Layout { return layout.New(a.DataDir) }

// TokenFile is the server's token file (with the CA hash), as an agent is given it.
func (s *Server) TokenFile() string { return s.Layout().Token() }

// Hakube runs a hakube subcommand on the agent's host (its namespaces), in
// its environment.
func (a *Agent) Hakube(args ...string) (string, int) {
	a.t.Helper()
	return runCommand(a.t, append(append(append([]string{}, a.Wrap...), Binary(a.t)), args...), a.Env, commandTimeout)
}
