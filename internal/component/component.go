// Package component runs a process as an ordered list of components that
// share one lifecycle: every component is initialised first (cheap checks that
// must fail before anything is written), then each is started and, if it has a
// Ready step, awaited in order, and they are stopped in reverse.
package component

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"k8s.io/klog/v2"
)

// Component is one part of a process.
type Component interface {
	// Name is used in logs and errors.
	Name() string
	// Init validates configuration and claims resources (ports, directories)
	// without writing state, so bad input fails before anything changes.
	Init(ctx context.Context) error
	// Start launches the component. It may wait for what it needs in order to
	// start (a joining etcd member waits for its learner slot); waits for the
	// component to serve belong in Ready.
	Start(ctx context.Context) error
	// Stop releases everything Start acquired; it is safe to call after a failed Start.
	Stop() error
}

// Readier is a component that serves some time after Start returns: the
// next component starts only once Ready does.
type Readier interface {
	// Ready blocks until the component serves, fails, or ctx ends.
	Ready(ctx context.Context) error
}

// Failer is a component that can fail while it runs.
type Failer interface {
	// Failed is called once every component is ready; its channel yields
	// the failure, if one comes.
	Failed() <-chan error
}

// Ready waits for c if it has a Ready step.
func Ready(ctx context.Context, c Component) error {
	if r, ok := c.(Readier); ok {
		return r.Ready(ctx)
	}
	return nil
}

// Manager runs components in order.
type Manager struct {
	components []Component
	started    []Component
	// StopLimit bounds each component's Stop: a stop that hangs must not keep
	// a server from exiting or restarting (it exits, or re-executes itself,
	// right after, which ends what is left). Default DefaultStopLimit.
	StopLimit time.Duration
}

// DefaultStopLimit is longer than any component's own shutdown bounds (the
// apiserver drains for a few seconds, a datastore member bounds its requests).
const DefaultStopLimit = 30 * time.Second

// NewManager returns a manager for the given components, in start order.
func NewManager(components ...Component) *Manager {
	return &Manager{components: components, StopLimit: DefaultStopLimit}
}

// Start initialises every component, then starts each and waits until it is ready
// before starting the next. On failure, what was started is stopped again.
func (m *Manager) Start(ctx context.Context) error {
	for _, c := range m.components {
		if err := c.Init(ctx); err != nil {
			m.Stop()
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
	}
	for _, c := range m.components {
		klog.Infof("starting %s", c.Name())
		m.started = append(m.started, c)
		if err := c.Start(ctx); err != nil {
			m.Stop()
			return fmt.Errorf("starting %s: %w", c.Name(), err)
		}
		if err := Ready(ctx, c); err != nil {
			m.Stop()
			if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
				return fmt.Errorf("interrupted while waiting for %s", c.Name())
			}
			return fmt.Errorf("waiting for %s: %w", c.Name(), err)
		}
		klog.V(1).Infof("component %s is ready", c.Name())
	}
	return nil
}

// Stop stops started components in reverse order, and releases resources that
// Init claimed on components that never started.
func (m *Manager) Stop() {
	started := map[Component]bool{}
	for i := len(m.started) - 1; i >= 0; i-- {
		c := m.started[i]
		started[c] = true
		klog.Infof("stopping %s", c.Name())
		if err := m.stop(c); err != nil {
			klog.Errorf("stopping %s: %v", c.Name(), err)
		}
	}
	for _, c := range m.components {
		if !started[c] {
			_ = c.Stop()
		}
	}
	m.started = nil
}

// stop stops c within the stop limit. When the limit passes it logs every
// goroutine's stack (where the stop hangs) and gives up on c.
func (m *Manager) stop(c Component) error {
	done := make(chan error, 1)
	go func() { done <- c.Stop() }()
	select {
	case err := <-done:
		return err
	case <-time.After(m.StopLimit):
		klog.Errorf("stopping %s took over %s: going on without it; every goroutine's stack follows", c.Name(), m.StopLimit)
		klog.Flush()
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		return fmt.Errorf("gave up after %s", m.StopLimit)
	}
}
