// Package harness starts real hakube processes (and the PostgreSQL and S3
// servers some tests use) for integration and multi-host tests, and talks to
// them with client-go and the real kubectl.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/internal/layout"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// EnvInt is the positive integer in the environment variable name (a test's
// knob for long runs), or def when it is unset or not one.
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// Binary returns the hakube binary: $HAKUBE_BIN (set by 'make e2e'), else one
// built once for this test process.
func Binary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("HAKUBE_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hakube-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "hakube")
		out, err := exec.Command("go", "build", "-o", builtBin, "github.com/hakube/hakube/cmd/hakube").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building hakube: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return builtBin
}

// RequireRoot skips a test that needs root (network namespaces, chown).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
}

// FreePortPair returns a port p such that p and p+1 are free on 127.0.0.1
// (a server uses p for its supervisor and p+1 for the apiserver). Ports are
// drawn below the kernel's ephemeral range: a port from that range can be
// taken by any outgoing connection while a test restarts its server.
func FreePortPair(tb testing.TB) int {
	tb.Helper()
	lo, hi := 10000, ephemeralLow()-2
	if hi <= lo {
		tb.Fatalf("the ephemeral port range starts at %d; no room below it for test ports", hi+2)
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if portFree(p) && portFree(p+1) {
			return p
		}
	}
	tb.Fatal("no free port pair")
	return 0
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralLow is the first port the kernel hands out to outgoing
// connections (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// Server is a hakube process of the server role.
type Server struct {
	*Process
	DataDir    string
	Kubeconfig string
	Port       int
	// Host is the address clients use to reach the supervisor.
	Host string
	// Dial, when set, is how test clients connect (e.g. from inside a namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Node makes the server a node too (on a node host: Host.NodeServer);
	// otherwise it runs with --disable-agent.
	Node bool
}

// NewServer prepares a server with its own data dir and ports; it is not started.
func NewServer(t testing.TB, name string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		Process:    newProcess(t, name, filepath.Join(dir, "server.log")),
		DataDir:    filepath.Join(dir, "data"),
		Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"),
		Port:       FreePortPair(t),
		Host:       "127.0.0.1",
	}
	s.Role, s.ReadyLine, s.readyTimeout = "server", "hakube is ready", 3*time.Minute
	s.flags = func() []string {
		f := []string{"--data-dir", s.DataDir, "--write-kubeconfig", s.Kubeconfig, "--https-listen-port", strconv.Itoa(s.Port)}
		if !s.Node {
			f = append(f, "--disable-agent")
		}
		return f
	}
	return s
}

// RESTConfig is the admin kubeconfig's client configuration, reaching s
// from the test.
func (s *Server) RESTConfig() *rest.Config {
	s.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		s.t.Fatal(err)
	}
	cfg.Host = s.URL()
	cfg.Dial = s.Dial
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

// Client returns a client-go clientset using the admin kubeconfig.
func (s *Server) Client() *kubernetes.Clientset {
	s.t.Helper()
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		s.t.Fatal(err)
	}
	return cs
}

// DqliteSocket is where a Dqlite server serves the etcd API to its own
// apiserver: a unix socket in its data dir, so a client needs no network.
func (s *Server) DqliteSocket() string { return s.Layout().DqliteSocket() }

// Layout names the paths in the server's data dir.
func (s *Server) Layout() layout.Layout { return layout.New(s.DataDir) }

// URL is the server's supervisor URL.
func (s *Server) URL() string { return "https://" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Kubectl runs the real kubectl against this server (inside its namespace, if any).
func (s *Server) Kubectl(args ...string) (string, error) {
	return Kubectl(s.Wrap, s.Kubeconfig, s.URL(), args...)
}

// Kubectl runs the real kubectl with a kubeconfig against server, prefixed by wrap.
func Kubectl(wrap []string, kubeconfig, server string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append(append([]string{}, wrap...), "kubectl", "--kubeconfig", kubeconfig, "--server", server)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// Hakube runs a hakube subcommand on the server's host with its data dir
// and environment, for up to commandTimeout.
func (s *Server) Hakube(args ...string) (string, int) {
	s.t.Helper()
	return s.HakubeWithin(commandTimeout, args...)
}

// HakubeWithin is Hakube for a command that may take longer.
func (s *Server) HakubeWithin(timeout time.Duration, args ...string) (string, int) {
	s.t.Helper()
	argv := append(append([]string{}, s.Wrap...), Binary(s.t))
	argv = append(argv, args...)
	argv = append(argv, "--data-dir", s.DataDir)
	return runCommand(s.t, argv, s.Env, timeout)
}

// RunHakube runs the binary to completion and returns its combined output and exit code.
func RunHakube(tb testing.TB, env []string, args ...string) (string, int) {
	tb.Helper()
	return runCommand(tb, append([]string{Binary(tb)}, args...), env, commandTimeout)
}

// commandTimeout bounds a hakube command a test runs.
const commandTimeout = 3 * time.Minute

func runCommand(tb testing.TB, argv, env []string, timeout time.Duration) (string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		tb.Fatalf("running hakube: %v", err)
	}
	return string(out), 0
}
