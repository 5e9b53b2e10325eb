// Package harness starts real hakube server processes for integration and
// multi-host tests, and talks to them with client-go and the real kubectl.
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
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

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

// Server is one hakube server process.
type Server struct {
	t          testing.TB
	Name       string
	DataDir    string
	Kubeconfig string
	Port       int
	// Args are passed to every start, before per-start arguments.
	Args []string
	// Wrap prefixes the command, e.g. "ip netns exec host1".
	Wrap []string
	// Env is added to the environment of every start.
	Env []string
	// Host is the address clients use to reach the supervisor.
	Host string
	// Dial, when set, is how test clients connect (e.g. from inside a namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	cmd     *exec.Cmd
	logPath string
	logFrom int64
	done    chan struct{}
	exitErr error
}

// NewServer prepares a server with its own data dir and ports; it is not started.
func NewServer(t testing.TB, name string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		t: t, Name: name,
		DataDir:    filepath.Join(dir, "data"),
		Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"),
		Port:       FreePortPair(t),
		Host:       "127.0.0.1",
		logPath:    filepath.Join(dir, "server.log"),
	}
	t.Cleanup(func() {
		if s.Running() && t.Failed() {
			// A goroutine dump in the log first: a server may be the failure.
			s.signalAndWait(syscall.SIGQUIT, 10*time.Second)
		}
		if s.Running() {
			s.Kill()
		}
		if t.Failed() {
			t.Logf("--- last lines of %s's log (%s):\n%s", s.Name, s.logPath, s.LogTail(40))
		}
	})
	return s
}

// CommandArgs are the full arguments of a start with extra appended.
func (s *Server) CommandArgs(extra ...string) []string {
	args := []string{"server",
		"--data-dir", s.DataDir,
		"--write-kubeconfig", s.Kubeconfig,
		"--https-listen-port", strconv.Itoa(s.Port),
	}
	args = append(args, s.Args...)
	return append(args, extra...)
}

func (s *Server) command(extra ...string) *exec.Cmd {
	argv := append(append([]string{}, s.Wrap...), Binary(s.t))
	argv = append(argv, s.CommandArgs(extra...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Start launches the server and waits until it reports ready.
func (s *Server) Start(extra ...string) {
	s.t.Helper()
	if err := s.StartAsync(extra...); err != nil {
		s.t.Fatal(err)
	}
	if err := s.WaitReady(3 * time.Minute); err != nil {
		s.t.Fatal(err)
	}
}

// StartAsync launches the server without waiting.
func (s *Server) StartAsync(extra ...string) error {
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, _ := log.Stat()
	s.logFrom = fi.Size()
	fmt.Fprintf(log, "=== start %s at %s: %s\n", s.Name, time.Now().Format(time.RFC3339Nano), strings.Join(s.CommandArgs(extra...), " "))
	s.cmd = s.command(extra...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		log.Close()
		return err
	}
	s.done = make(chan struct{})
	go func() {
		s.exitErr = s.cmd.Wait()
		log.Close()
		close(s.done)
	}()
	return nil
}

// WaitReady waits for the ready line of the current run.
func (s *Server) WaitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if strings.Contains(s.CurrentLog(), "hakube is ready") {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", s.Name, s.exitErr, s.LogTail(30))
		case <-deadline:
			return fmt.Errorf("%s not ready after %s:\n%s", s.Name, timeout, s.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and returns the exit code.
func (s *Server) Stop() int {
	s.t.Helper()
	return s.signalAndWait(syscall.SIGTERM, time.Minute)
}

// Kill sends SIGKILL to the process group and waits.
func (s *Server) Kill() {
	s.signalAndWait(syscall.SIGKILL, 30*time.Second)
}

func (s *Server) signalAndWait(sig syscall.Signal, timeout time.Duration) int {
	if !s.Running() {
		return s.ExitCode()
	}
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	} else {
		_ = s.cmd.Process.Signal(sig)
	}
	select {
	case <-s.done:
	case <-time.After(timeout):
		tail := s.LogTail(40)
		// SIGQUIT makes Go dump every goroutine into the log: where it hangs.
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.t.Errorf("%s did not exit within %s of %v (goroutine dump in %s); the last lines of its log before:\n%s", s.Name, timeout, sig, s.logPath, tail)
	}
	return s.ExitCode()
}

// WaitExit waits for the process to end by itself and returns its exit code.
func (s *Server) WaitExit(timeout time.Duration) (int, error) {
	select {
	case <-s.done:
		return s.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", s.Name, timeout)
	}
}

// Pid is the process id of the current run (0 before the first start).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Signal sends sig to the server process (SIGSTOP and SIGCONT pause and resume it).
func (s *Server) Signal(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// ExitCode is the exit code of the last run (-1 for a signal).
func (s *Server) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(s.exitErr, &ee) {
		return ee.ExitCode()
	}
	if s.exitErr != nil {
		return -1
	}
	return 0
}

// FullLog is the log of every run of the server.
func (s *Server) FullLog() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// CurrentLog is the log of the current (or last) run.
func (s *Server) CurrentLog() string {
	b, _ := os.ReadFile(s.logPath)
	if int64(len(b)) < s.logFrom {
		return ""
	}
	return string(b[s.logFrom:])
}

// LogTail returns the last n lines of the log.
func (s *Server) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.CurrentLog(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Client returns a client-go clientset using the admin kubeconfig.
func (s *Server) Client() *kubernetes.Clientset {
	s.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		s.t.Fatal(err)
	}
	cfg.Host = s.URL()
	cfg.Dial = s.Dial
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return cs
}

// DqliteSocket is where a Dqlite server serves the etcd API to its own
// apiserver: a unix socket in its data dir, so a client needs no network.
func (s *Server) DqliteSocket() string { return filepath.Join(s.DataDir, "server", "dqlite.sock") }

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

// RunToExit runs a server start to completion (for starts that must fail) and
// returns its output and exit code.
func (s *Server) RunToExit(extra ...string) (string, int) {
	s.t.Helper()
	argv := append(append([]string{}, s.Wrap...), Binary(s.t))
	return runCommand(s.t, append(argv, s.CommandArgs(extra...)...), s.Env)
}

// Hakube runs a hakube subcommand on the server's host with its data dir.
func (s *Server) Hakube(args ...string) (string, int) {
	s.t.Helper()
	argv := append(append([]string{}, s.Wrap...), Binary(s.t))
	argv = append(argv, args...)
	argv = append(argv, "--data-dir", s.DataDir)
	return runCommand(s.t, argv, nil)
}

// RunHakube runs the binary to completion and returns its combined output and exit code.
func RunHakube(tb testing.TB, env []string, args ...string) (string, int) {
	tb.Helper()
	return runCommand(tb, append([]string{Binary(tb)}, args...), env)
}

func runCommand(tb testing.TB, argv, env []string) (string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
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
