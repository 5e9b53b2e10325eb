// Package controlplane runs kube-apiserver, kube-controller-manager and
// kube-scheduler from k8s.io/kubernetes inside this process, each as a component.
package controlplane

import (
	"context"
	"fmt"

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
}

func (r *runner) start(fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go func() {
		r.err = fn(ctx)
		close(r.done)
	}()
}
