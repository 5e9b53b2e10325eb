// Package loadbalancer is the agent's client-side load balancer. The node's
// components (kubelet, kube-proxy, flannel) talk to a local address, and each
// connection is forwarded as raw TCP to one of the servers, so TLS passes
// through untouched (the servers' certificates name 127.0.0.1) and the node
// keeps working when the server it joined through is down.
package loadbalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/netutil"
)

const (
	dialTimeout    = 5 * time.Second
	healthInterval = 5 * time.Second
	healthTimeout  = 2 * time.Second
	// stopTimeout bounds Stop: every connection is closed first, so waiting
	// longer than this means something is stuck and the caller must go on.
	stopTimeout = 5 * time.Second
)

// keepAlive finds a peer that vanished without a FIN or RST (a partitioned or
// powered-off server) in about a minute instead of the kernel's two hours.
func keepAlive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}
}

// Config configures a LoadBalancer.
type Config struct {
	// Address to listen on, e.g. "127.0.0.1:6444".
	Address string
	// Server is the --server address (host:port): it is the first server
	// known and always stays in the list, as a last resort.
	Server string
	// StatePath persists the last known server list (JSON), so an agent
	// restarted while Server is down still finds the others. May be "".
	StatePath string
}

// LoadBalancer forwards TCP connections to one preferred server and moves
// to another when that one stops answering.
type LoadBalancer struct {
	cfg Config
	// Intervals are fields so that tests can shorten them.
	healthInterval time.Duration
	watchInterval  time.Duration

	// persistMu orders state-file writes like the SetServers calls that
	// cause them, so an older list never overwrites a newer one.
	persistMu sync.Mutex

	mu sync.Mutex
	// addr is cfg.Address until Start, then the listener's address (which
	// differs when the port is 0).
	addr      string
	servers   []string
	down      map[string]bool
	preferred string
	conns     map[string]map[*proxy]struct{}
	listener  net.Listener
	cancel    context.CancelFunc
	started   bool
	stopped   bool

	// wg counts the accept loop, the health loop and connection handlers.
	wg sync.WaitGroup
}

// proxy is one client connection forwarded to a server.
type proxy struct {
	client, server net.Conn
	once           sync.Once
}

func (p *proxy) close() {
	p.once.Do(func() {
		p.client.Close()
		p.server.Close()
	})
}

type state struct {
	Servers []string `json:"servers"`
}

// New returns a load balancer whose servers are cfg.Server plus those saved
// in cfg.StatePath.
func New(cfg Config) *LoadBalancer {
	lb := &LoadBalancer{
		cfg:            cfg,
		healthInterval: healthInterval,
		watchInterval:  watchInterval,
		addr:           cfg.Address,
		down:           map[string]bool{},
		conns:          map[string]map[*proxy]struct{}{},
	}
	lb.servers = lb.normalize(lb.loadState())
	lb.preferred = lb.servers[0]
	return lb
}

// loadState returns the saved servers; a missing or unreadable file only
// means the agent starts with cfg.Server alone.
func (lb *LoadBalancer) loadState() []string {
	if lb.cfg.StatePath == "" {
		return nil
	}
	data, err := os.ReadFile(lb.cfg.StatePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		klog.Warningf("load balancer: ignoring the saved server list: %v", err)
		return nil
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		klog.Warningf("load balancer: ignoring the saved server list %s, which is corrupt: %v", lb.cfg.StatePath, err)
		return nil
	}
	return s.Servers
}

// normalize deduplicates servers, drops entries that are not host:port and
// appends cfg.Server when missing so it is always tried, last.
func (lb *LoadBalancer) normalize(servers []string) []string {
	var out []string
	for _, s := range servers {
		s = strings.TrimSpace(s)
		if s == "" || slices.Contains(out, s) {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			klog.Warningf("load balancer: ignoring server %q: %v", s, err)
			continue
		}
		out = append(out, s)
	}
	if !slices.Contains(out, lb.cfg.Server) {
		out = append(out, lb.cfg.Server)
	}
	return out
}

// Name implements component.Component.
func (lb *LoadBalancer) Name() string { return "load balancer" }

// Init validates the configuration and checks that the port is free, so a
// taken port fails before anything else starts.
func (lb *LoadBalancer) Init(ctx context.Context) error {
	host, port, err := splitAddress(lb.cfg.Address)
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(lb.cfg.Server); err != nil {
		return fmt.Errorf("load balancer: server %q is not host:port: %v", lb.cfg.Server, err)
	}
	if port == 0 {
		return nil
	}
	return netutil.CheckPortFree(host, port, "load balancer port")
}

func splitAddress(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err == nil {
		var port int
		if port, err = strconv.Atoi(p); err == nil && (port < 0 || port > 65535) {
			err = errors.New("port out of range")
		}
		if err == nil {
			return host, port, nil
		}
	}
	return "", 0, fmt.Errorf("load balancer address %q is not host:port, such as 127.0.0.1:6444: %v", addr, err)
}

// Start listens on the address and serves in the background until Stop.
func (lb *LoadBalancer) Start(ctx context.Context) error {
	host, port, err := splitAddress(lb.cfg.Address)
	if err != nil {
		return err
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.started || lb.stopped {
		return errors.New("load balancer: Start called twice or after Stop")
	}
	l, err := netutil.Listen(host, port, "load balancer port")
	if err != nil {
		return err
	}
	// Serving outlives Start's context (a startup deadline); Stop ends it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	lb.started, lb.listener, lb.cancel = true, l, cancel
	lb.addr = l.Addr().String()
	lb.wg.Add(2)
	go lb.serve(runCtx, l)
	go lb.healthLoop(runCtx)
	klog.Infof("load balancer: listening on %s for %s", lb.addr, strings.Join(lb.servers, ", "))
	return nil
}

// Stop closes the listener and every forwarded connection, and waits a
// bounded time for the goroutines to end.
func (lb *LoadBalancer) Stop() error {
	lb.mu.Lock()
	if lb.stopped {
		lb.mu.Unlock()
		return nil
	}
	lb.stopped = true
	l, cancel := lb.listener, lb.cancel
	var victims []*proxy
	for s := range lb.conns {
		victims = append(victims, lb.takeConns(s)...)
	}
	lb.mu.Unlock()

	if cancel != nil {
		cancel()
	}
	if l != nil {
		l.Close()
	}
	closeAll(victims)
	done := make(chan struct{})
	go func() {
		lb.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("load balancer: connections still open %s after stopping", stopTimeout)
	}
}

// URL is where the node's components reach the servers.
func (lb *LoadBalancer) URL() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return "https://" + lb.addr
}

// Servers returns the current server list.
func (lb *LoadBalancer) Servers() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return slices.Clone(lb.servers)
}

// SetServers replaces the server list (host:port each). cfg.Server stays in
// it. Connections to removed servers are closed: the cluster drops a server
// from its endpoints when it stops renewing its lease, i.e. it is gone.
func (lb *LoadBalancer) SetServers(servers []string) {
	list := lb.normalize(servers)

	lb.persistMu.Lock()
	defer lb.persistMu.Unlock()

	lb.mu.Lock()
	if slices.Equal(list, lb.servers) {
		lb.mu.Unlock()
		return
	}
	var victims []*proxy
	for _, s := range lb.servers {
		if !slices.Contains(list, s) {
			delete(lb.down, s)
			victims = append(victims, lb.takeConns(s)...)
		}
	}
	lb.servers = list
	if !slices.Contains(list, lb.preferred) {
		old := lb.preferred
		lb.preferred = lb.nextUp(-1)
		klog.Infof("load balancer: server %s was removed, using %s", old, lb.preferred)
	}
	lb.mu.Unlock()

	closeAll(victims)
	klog.Infof("load balancer: servers are %s", strings.Join(list, ", "))
	lb.persist(list)
}

func (lb *LoadBalancer) persist(list []string) {
	if lb.cfg.StatePath == "" {
		return
	}
	data, err := json.Marshal(state{Servers: list})
	if err == nil {
		err = fsutil.WriteFile(lb.cfg.StatePath, append(data, '\n'), 0o600)
	}
	if err != nil {
		klog.Errorf("load balancer: saving the server list: %v", err)
	}
}

// nextUp returns the first server not known to be down after index i in
// the list, wrapping around, or the first server when all are down. Called
// with mu held.
func (lb *LoadBalancer) nextUp(i int) string {
	n := len(lb.servers)
	for k := 1; k <= n; k++ {
		if s := lb.servers[(i+k+n)%n]; !lb.down[s] {
			return s
		}
	}
	return lb.servers[0]
}

// dialOrder is the preferred server, then the others from there on that are
// not known to be down, then those known to be down: they may be back before
// the health check notices, and a connection should fail only when no server
// answers.
func (lb *LoadBalancer) dialOrder() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	n := len(lb.servers)
	start := max(slices.Index(lb.servers, lb.preferred), 0)
	var up, down []string
	for k := range n {
		s := lb.servers[(start+k)%n]
		if lb.down[s] {
			down = append(down, s)
		} else {
			up = append(up, s)
		}
	}
	return append(up, down...)
}

// markDown records that server failed a dial. When it was the preferred
// server and another is not known to be down, the preference moves there and
// the connections to the failed server are closed: they are likely dead too,
// and a client blocked on a half-open connection would otherwise wait for
// minutes before reconnecting.
func (lb *LoadBalancer) markDown(server string, cause error) {
	lb.mu.Lock()
	if !slices.Contains(lb.servers, server) || lb.down[server] {
		lb.mu.Unlock()
		return
	}
	lb.down[server] = true
	var victims []*proxy
	next := lb.nextUp(slices.Index(lb.servers, server))
	switch {
	case server != lb.preferred:
		klog.Infof("load balancer: server %s is unreachable: %v", server, cause)
	case !lb.down[next]:
		lb.preferred = next
		victims = lb.takeConns(server)
		klog.Infof("load balancer: server %s is unreachable, using %s", server, lb.preferred)
	default:
		klog.Infof("load balancer: server %s is unreachable and no other server is known to be up: %v", server, cause)
	}
	lb.mu.Unlock()
	closeAll(victims)
}

// markUp records that server answered. If the preferred server is down
// (every server was), the preference moves to this one.
func (lb *LoadBalancer) markUp(server string) {
	lb.mu.Lock()
	if !slices.Contains(lb.servers, server) {
		lb.mu.Unlock()
		return
	}
	if lb.down[server] {
		delete(lb.down, server)
		klog.Infof("load balancer: server %s is reachable again", server)
	}
	var victims []*proxy
	if old := lb.preferred; old != server && lb.down[old] {
		lb.preferred = server
		victims = lb.takeConns(old)
		klog.Infof("load balancer: server %s is unreachable, using %s", old, server)
	}
	lb.mu.Unlock()
	closeAll(victims)
}

// takeConns removes and returns server's connections. Called with mu held;
// the caller closes them after unlocking.
func (lb *LoadBalancer) takeConns(server string) []*proxy {
	var out []*proxy
	for p := range lb.conns[server] {
		out = append(out, p)
	}
	delete(lb.conns, server)
	return out
}

func closeAll(ps []*proxy) {
	for _, p := range ps {
		p.close()
	}
}

func (lb *LoadBalancer) serve(ctx context.Context, l net.Listener) {
	defer lb.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off instead of spinning.
			klog.Warningf("load balancer: accepting a connection: %v", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		lb.wg.Add(1)
		go lb.handle(ctx, c)
	}
}

func (lb *LoadBalancer) handle(ctx context.Context, client net.Conn) {
	defer lb.wg.Done()
	if tc, ok := client.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(keepAlive())
	}
	server, addr, err := lb.dial(ctx)
	if err != nil {
		client.Close()
		if ctx.Err() == nil {
			klog.Warningf("load balancer: dropping a connection from %s: %v", client.RemoteAddr(), err)
		}
		return
	}
	p := &proxy{client: client, server: server}
	if !lb.track(addr, p) {
		p.close()
		return
	}
	defer lb.untrack(addr, p)

	// Either direction ending ends the connection: the API's TLS traffic
	// never half-closes, and closing both sides lets the other copy return.
	done := make(chan struct{})
	go func() {
		io.Copy(server, client)
		p.close()
		close(done)
	}()
	io.Copy(client, server)
	p.close()
	<-done
}

// dial connects to the first server that answers, in dialOrder.
func (lb *LoadBalancer) dial(ctx context.Context) (net.Conn, string, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAliveConfig: keepAlive()}
	var errs []error
	for _, s := range lb.dialOrder() {
		c, err := d.DialContext(ctx, "tcp", s)
		if err == nil {
			lb.markUp(s)
			return c, s, nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		lb.markDown(s, err)
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("no server is reachable: %w", errors.Join(errs...))
}

// track registers p as a connection to server, unless the load balancer
// stopped or the server was removed or found down meanwhile.
func (lb *LoadBalancer) track(server string, p *proxy) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.stopped || !slices.Contains(lb.servers, server) || (lb.down[server] && server != lb.preferred) {
		return false
	}
	if lb.conns[server] == nil {
		lb.conns[server] = map[*proxy]struct{}{}
	}
	lb.conns[server][p] = struct{}{}
	return true
}

func (lb *LoadBalancer) untrack(server string, p *proxy) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	delete(lb.conns[server], p)
	if len(lb.conns[server]) == 0 {
		delete(lb.conns, server)
	}
}

// healthLoop dials every server now and then, so servers that are down
// return when they are up, and a preferred server that died is left even
// while no new connection comes to find out.
func (lb *LoadBalancer) healthLoop(ctx context.Context) {
	defer lb.wg.Done()
	t := time.NewTicker(lb.healthInterval)
	defer t.Stop()
	for {
		lb.checkHealth(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (lb *LoadBalancer) checkHealth(ctx context.Context) {
	servers := lb.Servers()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			d := net.Dialer{Timeout: healthTimeout}
			c, err := d.DialContext(ctx, "tcp", s)
			if err == nil {
				c.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	// Servers that are up first, so a dead preferred server can move to
	// one found up in this same round.
	for i, s := range servers {
		if errs[i] == nil {
			lb.markUp(s)
		}
	}
	for i, s := range servers {
		if errs[i] != nil {
			lb.markDown(s, errs[i])
		}
	}
}
