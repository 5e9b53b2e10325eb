package loadbalancer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestMain fails the run when a test leaves goroutines behind.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			fmt.Fprintf(os.Stderr, "%d goroutines left behind (%d before):\n%s\n", n-before, before, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

// backend is a server that writes its name on each connection, then echoes.
type backend struct {
	name string
	addr string
	l    net.Listener

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: l.Addr().String(), l: l}
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Go(func() {
				fmt.Fprintf(c, "%s\n", name)
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// kill closes the listener but keeps accepted connections open, like a
// server that vanished without resetting its connections (SIGKILL on a
// partitioned host): only the load balancer can end them.
func (b *backend) kill() { b.l.Close() }

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func startLB(t *testing.T, cfg Config, health time.Duration) *LoadBalancer {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	lb := New(cfg)
	lb.healthInterval = health
	ctx := t.Context()
	if err := lb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lb.Stop(); err != nil {
			t.Error(err)
		}
	})
	return lb
}

// connect opens a connection through lb and returns it with the name of
// the backend it reached.
func connect(t *testing.T, lb *LoadBalancer) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(lb.URL(), "https://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the backend's name: %v", err)
	}
	return c, r, strings.TrimSpace(name)
}

func echo(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if got != msg+"\n" {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

func TestProxiesBothWays(t *testing.T) {
	a := newBackend(t, "a")
	lb := startLB(t, Config{Server: a.addr}, time.Hour)
	c, r, name := connect(t, lb)
	if name != "a" {
		t.Fatalf("reached %q, want a", name)
	}
	echo(t, c, r, "hello")
	echo(t, c, r, strings.Repeat("x", 100000))
}

func TestFailoverOnDial(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	// No health check after the first: the failed dial alone must move on.
	lb := startLB(t, Config{Server: a.addr}, time.Hour)
	lb.SetServers([]string{a.addr, b.addr})
	if _, _, name := connect(t, lb); name != "a" {
		t.Fatalf("reached %q, want a", name)
	}
	a.kill()
	for i := range 3 {
		c, r, name := connect(t, lb)
		if name != "b" {
			t.Fatalf("connection %d after a died reached %q, want b", i, name)
		}
		echo(t, c, r, "still there")
	}
}

func TestHealthCheckClosesConnectionsToDeadServer(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	lb := startLB(t, Config{Server: a.addr}, 100*time.Millisecond)
	lb.SetServers([]string{a.addr, b.addr})
	c, r, name := connect(t, lb)
	if name != "a" {
		t.Fatalf("reached %q, want a", name)
	}
	a.kill()
	// The backend keeps its side open, so only the health check ends this.
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection to the dead server was not closed: %v", err)
	}
	if _, _, name := connect(t, lb); name != "b" {
		t.Fatalf("reached %q after a died, want b", name)
	}
}

func TestServerReturns(t *testing.T) {
	b := newBackend(t, "b")
	dead := deadAddr(t)
	lb := startLB(t, Config{Server: dead}, 100*time.Millisecond)
	lb.SetServers([]string{dead, b.addr})
	if _, _, name := connect(t, lb); name != "b" {
		t.Fatalf("reached %q, want b", name)
	}
	// The health check clears the mark of a server that answers again.
	l, err := net.Listen("tcp", dead)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", dead, err)
	}
	defer l.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lb.mu.Lock()
		down := lb.down[dead]
		lb.mu.Unlock()
		if !down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server that came back is still marked down")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStatePersists(t *testing.T) {
	b := newBackend(t, "b")
	dead := deadAddr(t)
	path := filepath.Join(t.TempDir(), "state", "loadbalancer.json")
	cfg := Config{Server: dead, StatePath: path}

	New(cfg).SetServers([]string{b.addr, b.addr, "", "not-an-address"})
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("state directory holds %v (%v), want only the state file", entries, err)
	}

	lb := startLB(t, cfg, time.Hour)
	if got, want := lb.Servers(), []string{b.addr, dead}; !slices.Equal(got, want) {
		t.Fatalf("servers after restart: %v, want %v", got, want)
	}
	if _, _, name := connect(t, lb); name != "b" {
		t.Fatalf("reached %q, want b", name)
	}

	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := New(cfg).Servers(), []string{dead}; !slices.Equal(got, want) {
		t.Fatalf("servers from a corrupt state file: %v, want %v", got, want)
	}
}

func TestWatch(t *testing.T) {
	ready, notReady := true, false
	port, tcp := int32(6443), corev1.ProtocolTCP
	slice := func(name, service string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
				Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			Ports:     []discoveryv1.EndpointPort{{Port: &port, Protocol: &tcp}},
			Endpoints: eps,
		}
	}
	ep := func(addr string, r *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: r}}
	}
	cs := fake.NewClientset(
		slice("kubernetes", "kubernetes", ep("10.0.0.2", &ready), ep("10.0.0.1", nil), ep("10.0.0.3", &notReady)),
		slice("kubernetes-v6", "kubernetes", ep("fd00::1", &ready)),
		slice("other", "other", ep("10.9.9.9", &ready)),
	)
	lb := New(Config{Address: "127.0.0.1:0", Server: "s1:6443"})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		lb.Watch(ctx, cs)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	want := []string{"10.0.0.1:6443", "10.0.0.2:6443", "[fd00::1]:6443", "s1:6443"}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(lb.Servers(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("servers: %v, want %v", lb.Servers(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	lb := New(Config{Address: addr, Server: "s1:6443"})
	defer lb.Stop()
	if err := lb.Init(t.Context()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Init on a taken port: %v, want an error naming %s", err, addr)
	}
	err = lb.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "another port") {
		t.Fatalf("Start on a taken port: %v, want an error naming %s and what to do", err, addr)
	}
}

func TestStopWithoutStart(t *testing.T) {
	lb := New(Config{Address: "127.0.0.1:0", Server: "s1:6443"})
	if err := lb.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(t.Context()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}
