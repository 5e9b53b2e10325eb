package runner

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/component"
)

// fake records its stop in a shared log; fail, if set, is its failure.
type fake struct {
	name string
	log  *[]string
	fail chan error
}

func (f *fake) Name() string                { return f.name }
func (f *fake) Init(context.Context) error  { return nil }
func (f *fake) Start(context.Context) error { return nil }
func (f *fake) Stop() error                 { *f.log = append(*f.log, f.name); return nil }

// failing is a fake that can fail while it runs.
type failing struct{ fake }

func (f *failing) Failed() <-chan error { return f.fail }

// TestFirstFailureWins: the first component to fail ends the run with its
// error, named, and every component is stopped in reverse order.
func TestFirstFailureWins(t *testing.T) {
	var log []string
	boom := errors.New("boom")
	a := &failing{fake{name: "a", log: &log, fail: make(chan error, 1)}}
	b := &fake{name: "b", log: &log}
	c := &failing{fake{name: "c", log: &log, fail: make(chan error, 1)}}
	readied := false
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Name: "test", Components: []component.Component{a, b, c}, OnReady: func() error { readied = true; return nil }})
	}()
	c.fail <- boom
	select {
	case err := <-done:
		if !errors.Is(err, boom) || err.Error() != "c: boom" {
			t.Fatalf("Run returned %v, want c's failure named", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end on a component's failure")
	}
	if !readied {
		t.Fatal("OnReady did not run")
	}
	if got := len(log); got != 3 || log[0] != "c" || log[1] != "b" || log[2] != "a" {
		t.Fatalf("stop order %v, want [c b a]", log)
	}
}

// TestStopWhenAsked: a run that is told to stop returns nil after stopping
// its components.
func TestStopWhenAsked(t *testing.T) {
	var log []string
	a := &failing{fake{name: "a", log: &log, fail: make(chan error, 1)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Name: "test", Components: []component.Component{a}}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after the context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end with its context")
	}
	if len(log) != 1 {
		t.Fatalf("stopped %v, want [a]", log)
	}
}

// TestNotifiesSystemd: under a Type=notify unit, systemd hears READY=1 once
// the components are ready, and STOPPING=1 when the run stops.
func TestNotifiesSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	var log []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Name: "test", Components: []component.Component{&fake{name: "a", log: &log}}})
	}()
	read := func() string {
		t.Helper()
		buf := make([]byte, 64)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notice %q, want READY=1", got)
	}
	cancel()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notice at stop %q, want STOPPING=1", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
