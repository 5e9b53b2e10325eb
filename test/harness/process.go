package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is one program a test starts and stops, run as
// <Wrap...> <program> <Role> <role's flags> <Args...> <per-start args...>:
// a hakube role (the subcommand, e.g. "server") or another program such as
// PostgreSQL. Every run appends to one log; readiness is looked for in the
// current run's part of it only.
type Process struct {
	t    testing.TB
	Name string
	// Role is the hakube subcommand; empty for another program.
	Role string
	// Args are passed to every start, after the role's own flags and before
	// per-start arguments.
	Args []string
	// Wrap prefixes the command, e.g. "ip netns exec host1".
	Wrap []string
	// Env is added to the environment of every start.
	Env []string
	// ReadyLine in the current run's log means the process is ready.
	ReadyLine string

	bin          string              // the program; empty for the hakube binary
	flags        func() []string     // the role's own flags, built at each start from fields a test may change
	ready        func() bool         // when set, polled instead of looking for ReadyLine
	readyTimeout time.Duration       // how long Start waits for ready
	dir          string              // working directory; empty for the test's
	cred         *syscall.Credential // user to run as; nil for the test's

	cmd     *exec.Cmd
	logPath string
	logFrom int64
	done    chan struct{}
	exitErr error
}

// newProcess prepares a process that logs to logPath; it is not started. At
// cleanup it is killed, and if the test failed its log's last lines are shown
// and then it gets SIGQUIT (a Go program dumps its goroutines into the log: it
// may be the failure). The lines shown are those before the dump, which would
// otherwise fill them with register values.
func newProcess(t testing.TB, name, logPath string) *Process {
	p := &Process{t: t, Name: name, logPath: logPath}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last lines of %s's log (%s):\n%s", p.Name, p.logPath, p.LogTail(40))
			if p.Running() {
				p.signalAndWait(syscall.SIGQUIT, 10*time.Second)
				t.Logf("%s got SIGQUIT: its goroutines are in %s", p.Name, p.logPath)
			}
		}
		if p.Running() {
			p.Kill()
		}
		// The log goes with the test's temporary directory: keep a copy.
		if dir := os.Getenv("HAKUBE_TEST_LOGS"); dir != "" && t.Failed() {
			keep := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+p.Name+".log")
			if b, err := os.ReadFile(p.logPath); err == nil && os.MkdirAll(dir, 0o755) == nil && os.WriteFile(keep, b, 0o644) == nil {
				t.Logf("%s's log is kept in %s", p.Name, keep)
			}
		}
	})
	return p
}

// CommandArgs are the arguments of a start after the program: the role, its
// own flags, Args, then extra.
func (p *Process) CommandArgs(extra ...string) []string {
	var args []string
	if p.Role != "" {
		args = append(args, p.Role)
	}
	if p.flags != nil {
		args = append(args, p.flags()...)
	}
	args = append(args, p.Args...)
	return append(args, extra...)
}

// argv is the whole command line of a start.
func (p *Process) argv(extra ...string) []string {
	bin := p.bin
	if bin == "" {
		bin = Binary(p.t)
	}
	argv := append(append([]string{}, p.Wrap...), bin)
	return append(argv, p.CommandArgs(extra...)...)
}

func (p *Process) command(extra ...string) *exec.Cmd {
	argv := p.argv(extra...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.dir
	// A process group of its own: Kill reaches what it spawned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.cred}
	return cmd
}

// Start launches the process and waits until it is ready, failing the test
// that created it otherwise.
func (p *Process) Start(extra ...string) {
	p.t.Helper()
	p.StartIn(p.t, extra...)
}

// StartIn is Start failing t instead: a subtest's, so that a failed start
// ends the subtest rather than the test that created the process.
func (p *Process) StartIn(t testing.TB, extra ...string) {
	t.Helper()
	if err := p.StartAsync(extra...); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(p.readyTimeout); err != nil {
		t.Fatal(err)
	}
}

// StartAsync launches the process without waiting.
func (p *Process) StartAsync(extra ...string) error {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, _ := log.Stat()
	p.logFrom = fi.Size()
	fmt.Fprintf(log, "=== start %s at %s: %s\n", p.Name, time.Now().Format(time.RFC3339Nano), strings.Join(p.CommandArgs(extra...), " "))
	p.cmd = p.command(extra...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return err
	}
	p.done = make(chan struct{})
	go func() {
		p.exitErr = p.cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return nil
}

// WaitReady waits until the current run is ready: its ready probe succeeds,
// or its ready line is in the log.
func (p *Process) WaitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for !p.isReady() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, p.exitErr, p.LogTail(30))
		case <-deadline:
			return fmt.Errorf("%s not ready after %s:\n%s", p.Name, timeout, p.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

func (p *Process) isReady() bool {
	if p.ready != nil {
		return p.ready()
	}
	return strings.Contains(p.CurrentLog(), p.ReadyLine)
}

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and returns the exit code.
func (p *Process) Stop() int {
	p.t.Helper()
	return p.signalAndWait(syscall.SIGTERM, time.Minute)
}

// Kill sends SIGKILL to the process group and waits.
func (p *Process) Kill() {
	p.signalAndWait(syscall.SIGKILL, 30*time.Second)
}

func (p *Process) signalAndWait(sig syscall.Signal, timeout time.Duration) int {
	if !p.Running() {
		return p.ExitCode()
	}
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	} else {
		_ = p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		tail := p.LogTail(40)
		// SIGQUIT makes Go dump every goroutine into the log: where it hangs.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		p.t.Errorf("%s did not exit within %s of %v (goroutine dump in %s); the last lines of its log before:\n%s", p.Name, timeout, sig, p.logPath, tail)
	}
	return p.ExitCode()
}

// WaitExit waits for the process to end by itself and returns its exit code.
func (p *Process) WaitExit(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Pid is the process id of the current run (0 before the first start).
func (p *Process) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the process (SIGSTOP and SIGCONT pause and resume it).
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// ExitCode is the exit code of the last run (-1 for a signal).
func (p *Process) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode()
	}
	if p.exitErr != nil {
		return -1
	}
	return 0
}

// FullLog is the log of every run.
func (p *Process) FullLog() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// CurrentLog is the log of the current (or last) run.
func (p *Process) CurrentLog() string {
	b, _ := os.ReadFile(p.logPath)
	if int64(len(b)) < p.logFrom {
		return ""
	}
	return string(b[p.logFrom:])
}

// LogTail returns the last n lines of the current run's log.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.CurrentLog(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RunToExit runs a start to completion (for starts that must fail) and
// returns its output and exit code.
func (p *Process) RunToExit(extra ...string) (string, int) {
	p.t.Helper()
	return runCommand(p.t, p.argv(extra...), p.Env, commandTimeout)
}
