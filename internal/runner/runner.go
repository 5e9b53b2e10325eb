// Package runner runs one hakube process (a server, later an agent) as an
// ordered list of components: it starts them, waits until the first of them
// fails or the process is told to stop, and stops them all. The first
// failure wins. An upstream component that ends the process through klog
// once the process has been up a while restarts it in place instead.
package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/component"
)

// ErrRestart asks the caller to start the process again in place (Restart).
var ErrRestart = errors.New("the process must restart in place")

// DefaultRestartAfter is how long a process must have been ready before an
// upstream component's exit restarts it in place instead of ending it: one
// that fails early exits, as upstream intends, instead of looping.
const DefaultRestartAfter = time.Minute

// Config is what Run runs.
type Config struct {
	// Name is the process's role in logs: server, agent.
	Name string
	// Components are started in this order and stopped in reverse.
	Components []component.Component
	// RestartAfter defaults to DefaultRestartAfter.
	RestartAfter time.Duration
	// RestartEarly, when set, says whether an early exit restarts in place
	// all the same (a datastore out of space recovers before the components
	// start again).
	RestartEarly func() bool
	// OnReady runs once every component is ready.
	OnReady func() error
}

// Run starts the components and blocks until ctx ends (nil), a component
// fails (its error), or an upstream component asks to end the process after
// RestartAfter (ErrRestart). Every component is stopped before it returns.
func Run(ctx context.Context, cfg Config) error {
	if cfg.RestartAfter == 0 {
		cfg.RestartAfter = DefaultRestartAfter
	}
	mgr := component.NewManager(cfg.Components...)
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	// The controller manager and scheduler end the process through klog when
	// their leader election stops: during shutdown, as soon as the apiserver
	// goes away; while running, when the datastore was too slow to renew their
	// lease (10 s). Hold that exit during shutdown until every component has
	// stopped; while running, restart in place rather than leave a dead
	// process behind.
	var stopping atomic.Bool
	var readyAt atomic.Int64
	restart := make(chan struct{}, 1)
	klog.OsExit = func(code int) {
		if stopping.Load() {
			select {}
		}
		ready := readyAt.Load()
		if ready == 0 || (time.Since(time.Unix(0, ready)) < cfg.RestartAfter && (cfg.RestartEarly == nil || !cfg.RestartEarly())) {
			os.Exit(code)
		}
		select {
		case restart <- struct{}{}:
		default:
		}
		select {}
	}
	defer func() {
		stopping.Store(true)
		notify("STOPPING=1")
		mgr.Stop()
	}()
	if cfg.OnReady != nil {
		if err := cfg.OnReady(); err != nil {
			return err
		}
	}
	readyAt.Store(time.Now().UnixNano())
	notify("READY=1")

	failed := make(chan error, len(cfg.Components))
	for _, c := range cfg.Components {
		f, ok := c.(component.Failer)
		if !ok {
			continue
		}
		// A nil channel is a component that cannot fail after all (a joining
		// server's datastore that is not a Failer); a closed one stopped.
		if ch := f.Failed(); ch != nil {
			go func(name string) {
				if err, ok := <-ch; ok {
					failed <- fmt.Errorf("%s: %w", name, err)
				}
			}(c.Name())
		}
	}
	select {
	case <-ctx.Done():
		klog.Infof("shutting down")
		return nil
	case err := <-failed:
		return err
	case <-restart:
		klog.Errorf("a component exited (see above); stopping the %s to restart it in place", cfg.Name)
		return ErrRestart
	}
}

// Restart re-executes this binary with the same arguments and environment,
// keeping the process ID: to anything watching it, the process just comes
// back. It returns only on failure.
func Restart() error {
	exe, err := os.Executable()
	if err == nil {
		klog.Infof("restarting %s in place", exe)
		klog.Flush()
		err = syscall.Exec(exe, os.Args, os.Environ())
	}
	return fmt.Errorf("restarting in place: %w", err)
}
