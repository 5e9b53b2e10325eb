// Package inprocess runs an upstream daemon (the kubelet, kube-proxy) in this
// process. Their loops wait on wait.NeverStop, so they end only with the
// process: Stop ends what honours the context, and a daemon that returns on
// its own has failed.
package inprocess

import "context"

// Daemon is embedded by a component that runs one; it gives the component
// Failed and Stop.
type Daemon struct {
	failed chan error
	cancel context.CancelFunc
}

// Run runs fn in the background until Stop.
func (d *Daemon) Run(fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.failed = cancel, make(chan error, 1)
	go func() {
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			d.failed <- err
		}
	}()
}

// Failed reports a daemon that stopped on its own (nil before Run).
func (d *Daemon) Failed() <-chan error { return d.failed }

// Stop ends what of the daemon honours its context; the rest ends with the
// process.
func (d *Daemon) Stop() error {
	if d.cancel != nil {
		d.cancel()
	}
	return nil
}
