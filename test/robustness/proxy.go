package robustness

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hakube/hakube/test/harness"
)

const (
	proxyPort = 12380
	// proxyMark tags the proxy's own connections so the redirect skips them.
	proxyMark = 0x2380
)

// peerProxy is a userspace TCP proxy on every host through which all etcd peer
// connections pass (there is no tc netem here). An iptables rule in each
// host's namespace redirects outgoing connections to a peer port to the host's
// proxy, which dials the original destination from the host's own address, so
// etcd's peer certificate checks still see the real peer. A fault makes the
// proxies delay or drop the bytes of every connection to or from one host.
type peerProxy struct {
	nw   *harness.Network
	port int    // the datastore's peer port
	cert string // the members' certificate for it (in their TLS dir), for probes
	mu   sync.Mutex
	// victim is the disturbed host's address, "" while healthy.
	victim        string
	delay, jitter time.Duration
	dropRate      float64
	// disturbed counts the chunks held or dropped since the last set.
	disturbed int
}

// installPeerProxy starts a proxy in every host of nw for connections to
// peerPort; it must run before the servers start so that every peer
// connection goes through it.
func installPeerProxy(t testing.TB, nw *harness.Network, peerPort int, peerCert string) *peerProxy {
	t.Helper()
	p := &peerProxy{nw: nw, port: peerPort, cert: peerCert}
	for _, h := range nw.Hosts {
		l, err := h.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", proxyPort))
		if err != nil {
			t.Fatalf("proxy listener in %s: %v", h.Name, err)
		}
		t.Cleanup(func() { l.Close() })
		rule := []string{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", nw.Subnet(), "--dport", strconv.Itoa(peerPort),
			"-m", "mark", "!", "--mark", strconv.Itoa(proxyMark), "-j", "REDIRECT", "--to-ports", strconv.Itoa(proxyPort)}
		if out, err := exec.Command("ip", append([]string{"netns", "exec", h.Name, "iptables"}, rule...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables redirect in %s: %v\n%s", h.Name, err, out)
		}
		go p.serve(t, h, l)
	}
	return p
}

// set disturbs every peer connection to or from victim ("" heals); it
// returns how many chunks the previous setting disturbed.
func (p *peerProxy) set(victim string, delay, jitter time.Duration, dropRate float64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.disturbed
	p.victim, p.delay, p.jitter, p.dropRate, p.disturbed = victim, delay, jitter, dropRate, 0
	return n
}

// fate returns, for one chunk between hosts a and b, how long to hold it and
// whether to drop it.
func (p *peerProxy) fate(a, b string) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.victim == "" || (a != p.victim && b != p.victim) {
		return 0, false
	}
	p.disturbed++
	d := p.delay
	if p.jitter > 0 {
		d += rand.N(p.jitter)
	}
	return d, rand.Float64() < p.dropRate
}

// serve accepts until the listener is closed. Any other accept error is
// logged and waited out: a proxy that stopped accepting would cut its host
// off from new peer connections for the rest of the run, while the old ones
// kept working.
func (p *peerProxy) serve(t testing.TB, h *harness.Host, l net.Listener) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			t.Logf("peer proxy on %s: %v", h.Name, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go p.handle(h, c.(*net.TCPConn))
	}
}

func (p *peerProxy) handle(h *harness.Host, in *net.TCPConn) {
	defer in.Close()
	dst, err := originalDst(in)
	if err != nil || !p.nw.Owns(dst.IP.String()) {
		// Only the test network's hosts are ever dialled.
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, proxyMark) }); err != nil {
			return err
		}
		return serr
	}}
	out, err := dialIn(h, d, dst.String())
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(out, in, h.IP, dst.IP.String()); done <- struct{}{} }()
	go func() { p.pipe(in, out, h.IP, dst.IP.String()); done <- struct{}{} }()
	<-done // one direction ended: close both
}

func dialIn(h *harness.Host, d net.Dialer, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.DialContextWith(ctx, d, "tcp", addr)
}

// pipe copies src to dst, holding each chunk as the fault says while keeping
// the byte order. A dropped chunk is lost for good: the TLS stream breaks and
// the peers see lost messages and reconnect, as on a lossy link.
func (p *peerProxy) pipe(dst, src net.Conn, a, b string) {
	type chunk struct {
		data []byte
		at   time.Time
		drop bool
	}
	ch := make(chan chunk, 256)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		defer close(ch)
		last := time.Time{}
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				hold, drop := p.fate(a, b)
				at := time.Now().Add(hold)
				if at.Before(last) {
					at = last // never reorder
				}
				last = at
				select {
				case ch <- chunk{buf[:n], at, drop}:
				case <-quit:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if c.drop {
			continue
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// originalDst is where a redirected connection was headed (SO_ORIGINAL_DST).
func originalDst(c *net.TCPConn) (*net.TCPAddr, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var addr *net.TCPAddr
	var gerr error
	err = rc.Control(func(fd uintptr) {
		// The kernel returns a sockaddr_in in the IPv6 mreq-sized buffer.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			gerr = err
			return
		}
		port := binary.BigEndian.Uint16(m.Multiaddr[2:4])
		addr = &net.TCPAddr{IP: net.IPv4(m.Multiaddr[4], m.Multiaddr[5], m.Multiaddr[6], m.Multiaddr[7]), Port: int(port)}
	})
	if err != nil {
		return nil, err
	}
	return addr, gerr
}
