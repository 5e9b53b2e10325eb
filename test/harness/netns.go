package harness

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Network is a set of hosts, each a network namespace with one address on a
// bridge that lives in a namespace of its own; the root namespace is untouched.
type Network struct {
	t      testing.TB
	id     string
	subnet string // first three octets
	Hosts  []*Host
}

// Host is one namespace on the network.
type Host struct {
	Name string // namespace name
	IP   string
	net  *Network
	node *node // set by EnableNode
}

func ipCmd(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// NewNetwork creates n hosts on a private bridge and removes them at cleanup.
func NewNetwork(t testing.TB, n int) *Network {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the ip command (iproute2) is required for multi-host tests")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	nw := &Network{t: t, id: id, subnet: fmt.Sprintf("10.%d.%d", 200+int(b[0])%50, b[1])}
	sw := "hk" + id + "sw"
	ipCmd(t, "netns", "add", sw)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", sw).Run() })
	ipCmd(t, "-n", sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		nw.AddHost(i)
	}
	return nw
}

// AddHost adds host number i (1-based) to the network.
func (nw *Network) AddHost(i int) *Host {
	t := nw.t
	h := &Host{Name: fmt.Sprintf("hk%sh%d", nw.id, i), IP: fmt.Sprintf("%s.%d", nw.subnet, 10+i), net: nw}
	sw := "hk" + nw.id + "sw"
	ipCmd(t, "netns", "add", h.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", h.Name).Run() })
	port := fmt.Sprintf("v%d", i)
	ipCmd(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
	ipCmd(t, "-n", sw, "link", "set", port, "master", "br0", "up")
	ipCmd(t, "-n", h.Name, "addr", "add", h.IP+"/24", "dev", "eth0")
	ipCmd(t, "-n", h.Name, "link", "set", "eth0", "up")
	ipCmd(t, "-n", h.Name, "link", "set", "lo", "up")
	nw.Hosts = append(nw.Hosts, h)
	return h
}

// Wrap is the command prefix that runs a program on the host: in its network
// namespace, and on a node host (EnableNode) in its mount namespace too.
func (h *Host) Wrap() []string {
	if h.node != nil {
		return []string{h.node.wrapper}
	}
	return []string{"ip", "netns", "exec", h.Name}
}

// CheckRoute fails the test unless the namespace exists and dst is one of the
// network's hosts reached through its eth0: test traffic never leaves it.
func (h *Host) CheckRoute(tb testing.TB, dst string) {
	tb.Helper()
	if _, err := os.Stat("/run/netns/" + h.Name); err != nil {
		tb.Fatalf("namespace %s is missing: %v", h.Name, err)
	}
	if !h.net.Owns(dst) {
		tb.Fatalf("refusing to send test traffic to %s: not a host of this test network", dst)
	}
	out, err := exec.Command("ip", "-n", h.Name, "route", "get", dst).CombinedOutput()
	if err != nil {
		tb.Fatalf("no route from %s to %s: %v\n%s", h.Name, dst, err, out)
	}
	if dst != h.IP && !strings.Contains(string(out), "dev eth0") {
		tb.Fatalf("route from %s to %s does not use the test bridge: %s", h.Name, dst, out)
	}
}

// inNamespace runs fn on a thread switched into the host's namespace; sockets
// fn creates stay in it. The thread is then discarded, never reused.
func (h *Host) inNamespace(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/run/netns/"+h.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// DialContext dials from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return h.DialContextWith(ctx, net.Dialer{}, network, addr)
}

// PresentedCert is the certificate the TLS server at addr presents, seen
// from h, unverified: the caller checks what it needs of it.
func (h *Host) PresentedCert(addr string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return tc.ConnectionState().PeerCertificates[0], nil
}

// DialContextWith dials from inside the host's namespace with d.
func (h *Host) DialContextWith(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNamespace(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.inNamespace(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Owns reports whether ip is one of the network's hosts.
func (nw *Network) Owns(ip string) bool {
	for _, o := range nw.Hosts {
		if o.IP == ip {
			return true
		}
	}
	return false
}

// Subnet is the network's /24 in CIDR notation.
func (nw *Network) Subnet() string { return nw.subnet + ".0/24" }

// Server prepares a hakube server on this host (not started), serving at the
// host's address on the standard port.
func (h *Host) Server(t testing.TB, name string) *Server {
	s := NewServer(t, name)
	h.place(t, s.Process)
	s.Port, s.Host, s.Dial = 6443, h.IP, h.DialContext
	return s
}

// place makes p, a hakube process of any role, run on this host: inside its
// namespace, as the node named after p at the host's address.
func (h *Host) place(t testing.TB, p *Process) {
	p.Wrap = h.Wrap()
	p.Args = append(p.Args, "--node-ip", h.IP, "--node-name", p.Name)
	h.CheckRoute(t, h.IP)
}
