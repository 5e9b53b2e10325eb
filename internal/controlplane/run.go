// Package controlplane runs kube-apiserver, kube-controller-manager and
// kube-scheduler from k8s.io/kubernetes inside this process, each as a component.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// parseFlags applies command-line style args to an upstream component's flag sets,
// so we configure it exactly as its own binary would be configured.
func parseFlags(name string, sets cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	for _, set := range sets.Order {
		fs.AddFlagSet(sets.FlagSets[set])
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags: %w", name, err)
	}
	return nil
}

// runner runs one upstream component's blocking Run in the background.
type runner struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // valid once done is closed
	// configured is closed once the component accepted its configuration.
	configured     chan struct{}
	configuredOnce sync.Once
}

func (r *runner) start(fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	r.configured = make(chan struct{})
	go func() {
		r.err = fn(ctx)
		close(r.done)
	}()
}

// accepted marks the configuration as accepted: what fails later is a
// failure of the running component.
func (r *runner) accepted() { r.configuredOnce.Do(func() { close(r.configured) }) }

// startupError waits until the component accepted its configuration, and
// returns why it did not.
func (r *runner) startupError(ctx context.Context) error {
	select {
	case <-r.configured:
		return nil
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failed yields why the component stopped, if it does.
func (r *runner) failed() <-chan error {
	ch := make(chan error, 1)
	go func() {
		<-r.done
		if r.err != nil {
			ch <- fmt.Errorf("stopped: %w", r.err)
		} else {
			ch <- errors.New("stopped")
		}
	}()
	return ch
}
