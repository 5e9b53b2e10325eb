package component

import (
	"context"
	"testing"
	"time"
)

// fake is a component whose Stop blocks until release is closed.
type fake struct {
	name    string
	release chan struct{}
	stopped bool
}

func (f *fake) Name() string                { return f.name }
func (f *fake) Init(context.Context) error  { return nil }
func (f *fake) Start(context.Context) error { return nil }
func (f *fake) Stop() error {
	if f.release != nil {
		<-f.release
	}
	f.stopped = true
	return nil
}

// TestStopGivesUpOnAHungComponent: a component whose Stop hangs holds the
// manager for the stop limit only; the components before it still stop.
func TestStopGivesUpOnAHungComponent(t *testing.T) {
	first, hung := &fake{name: "first"}, &fake{name: "hung", release: make(chan struct{})}
	defer close(hung.release)
	m := NewManager(first, hung)
	m.StopLimit = 200 * time.Millisecond
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	m.Stop()
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Stop took %s with a limit of %s", took, m.StopLimit)
	}
	if !first.stopped {
		t.Fatal("the component started before the hung one was not stopped")
	}
}
