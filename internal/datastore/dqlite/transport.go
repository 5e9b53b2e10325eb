package dqlite

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One TLS port carries both Raft and the members' own RPCs (write
// forwarding, read index, membership): the first byte a dialer sends says
// which. Both sides present certificates from the cluster's peer CA.
const (
	kindRaft byte = 'R'
	kindRPC  byte = 'H'
)

// mux accepts TLS connections and sorts them by their first byte.
type mux struct {
	ln      net.Listener
	client  *tls.Config
	raftc   chan net.Conn
	rpcc    chan net.Conn
	closing chan struct{}
	once    sync.Once
}

func newMux(ln net.Listener, client *tls.Config) *mux {
	m := &mux{ln: ln, client: client, raftc: make(chan net.Conn), rpcc: make(chan net.Conn), closing: make(chan struct{})}
	go m.serve()
	return m
}

func (m *mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		go m.route(c)
	}
}

func (m *mux) route(c net.Conn) {
	// The handshake and the kind byte must come quickly; a silent client
	// does not hold a goroutine for long.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var ch chan net.Conn
	switch b[0] {
	case kindRaft:
		ch = m.raftc
	case kindRPC:
		ch = m.rpcc
	default:
		c.Close()
		return
	}
	select {
	case ch <- c:
	case <-m.closing:
		c.Close()
	}
}

func (m *mux) close() {
	m.once.Do(func() {
		close(m.closing)
		m.ln.Close()
	})
}

// dial opens a connection of the given kind to a member.
func (m *mux) dial(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	return dialPeer(ctx, m.client, addr, kind)
}

func dialPeer(ctx context.Context, client *tls.Config, addr string, kind byte) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: client}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &dialError{err}
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, &dialError{err}
	}
	return c, nil
}

// dialError marks a connection that never carried a request: whatever was
// to be sent can be sent again elsewhere.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// listener is one kind's share of the mux, as a net.Listener. Closing it
// stops its Accept only: the RPC server closes its listener on shutdown while
// Raft still uses the port. Stopping the member closes the mux.
type listener struct {
	m    *mux
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newListener(m *mux, ch chan net.Conn) *listener {
	return &listener{m: m, ch: ch, done: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.m.closing:
		return nil, net.ErrClosed
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return l.m.ln.Addr() }

// streamLayer is Raft's view of the mux.
type streamLayer struct {
	*listener
	advertise net.Addr
	// wrap, if set, wraps every Raft connection; dialed says which side
	// this member is (tests hold traffic with it).
	wrap func(c net.Conn, dialed bool) net.Conn
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.listener.Accept()
	if err != nil || s.wrap == nil {
		return c, err
	}
	return s.wrap(c, false), nil
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.m.dial(ctx, string(addr), kindRaft)
	if err != nil || s.wrap == nil {
		return c, err
	}
	return s.wrap(c, true), nil
}
