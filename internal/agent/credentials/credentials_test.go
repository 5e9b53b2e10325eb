package credentials

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
)

// TestUnreachableServer: a first join to a server that does not answer ends
// with what to check; a node that joined before keeps waiting.
func TestUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	lay := layout.New(t.TempDir())
	c := New(Config{Server: "https://" + addr, Token: token.Token{Secret: "secret-secret"}, Name: "n", Layout: lay, FirstJoinTimeout: 2 * time.Second})
	if err := c.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("want the unreachable server named with what to check, got %v", err)
	}
	if _, err := os.Stat(string(lay.AgentTLS())); err == nil {
		t.Fatal("a join that never reached a server wrote the node's keys")
	}

	// A node has joined once it holds its client certificate.
	if err := os.MkdirAll(string(lay.AgentTLS()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lay.AgentTLS().Cert(KubeletClient), []byte("joined before"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	began := time.Now()
	if err := c.Start(ctx); err == nil || time.Since(began) < 3*time.Second {
		t.Fatalf("a node that joined before gave up after %s: %v", time.Since(began), err)
	}
}

// TestRenewalDue: a node renews when one of its leaves is within the window
// or a renewal was requested, and not for its CAs.
func TestRenewalDue(t *testing.T) {
	lay := layout.New(t.TempDir())
	tlsDir := lay.AgentTLS()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(string(tlsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tlsDir.Cert(pki.ServerCA), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueFiles(pki.Leaf{CommonName: "system:node:n", Usage: pki.ClientAuth}, tlsDir.Cert(KubeletClient), tlsDir.Key(KubeletClient)); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Layout: lay})
	year := pki.Lifetimes{Window: pki.RenewWindow}
	if why := c.renewalDue(year); why != "" {
		t.Fatalf("a new year-long certificate is due: %s", why)
	}
	if err := os.WriteFile(lay.RenewRequest(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if why := c.renewalDue(year); why != "requested" {
		t.Fatalf("with a request: %q", why)
	}
	if err := os.Remove(lay.RenewRequest()); err != nil {
		t.Fatal(err)
	}
	// Within a 366-day window the leaf is not due: a third of its life is
	// left. The 10-year CA never is.
	if why := c.renewalDue(pki.Lifetimes{Window: 366 * 24 * time.Hour}); why != "" {
		t.Fatalf("a year-long certificate with a year left: %q", why)
	}
	// A server issued a 12-hour certificate with an hour left: due, whatever
	// this node's own (year-long) window.
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "system:node:n"},
		NotBefore: now.Add(-11 * time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		ca.Cert, ca.Key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tlsDir.Cert(KubeletClient), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if why := c.renewalDue(year); !strings.HasPrefix(why, KubeletClient+" expires ") {
		t.Fatalf("a third of its life left: %q", why)
	}
	if why := c.renewalDue(pki.Lifetimes{Window: 30 * time.Minute}); why != "" {
		t.Fatalf("outside a 30-minute window: %q", why)
	}
}
