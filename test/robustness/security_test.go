package robustness

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/test/harness"
)

// TestSecurity: the etcd ports refuse clients without a certificate of the
// cluster's CAs, the supervisor answers malformed and unauthenticated join
// requests with 4xx and stays healthy, and files keep their modes after a join.
func TestSecurity(t *testing.T) {
	nw := harness.NewNetwork(t, 2)
	c := harness.NewEtcdCluster(t, nw, 2, "security-secret")
	c.Form(t)
	s1, h1 := c.Servers[0], nw.Hosts[0]
	h1.CheckRoute(t, h1.IP)

	rogueCA, err := pki.NewCA("rogue")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _ := rogueCA.Issue(pki.Leaf{CommonName: "etcd-client", Usage: pki.ClientAuth})
	rogue, _ := tls.X509KeyPair(certPEM, keyPEM)
	for _, port := range []string{"2379", "2380"} {
		for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "another CA's certificate": {rogue}} {
			cfg := &tls.Config{InsecureSkipVerify: true}
			if certs != nil {
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
			}
			if err := tlsRoundTrip(h1, net.JoinHostPort(h1.IP, port), cfg); err == nil {
				t.Errorf("etcd port %s accepted a client with %s", port, name)
			}
		}
	}

	base := s1.URL()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     h1.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	type req struct {
		method, path string
		body         io.Reader
		user, pass   string
		want         int
	}
	huge := strings.NewReader(strings.Repeat("x", 32<<20))
	for _, r := range []req{
		{"GET", "/v1-hakube/server-bootstrap", nil, "", "", http.StatusUnauthorized},
		{"GET", "/v1-hakube/server-bootstrap", nil, "server", "wrong", http.StatusUnauthorized},
		{"GET", "/v1-hakube/members", nil, "admin", "security-secret", http.StatusUnauthorized},
		// Only GET is a join endpoint: anything else goes to the apiserver, which wants credentials first.
		{"POST", "/v1-hakube/server-bootstrap", huge, "server", "wrong", http.StatusUnauthorized},
		{"GET", "/cacerts?nonce=zz", nil, "", "", http.StatusBadRequest},
		{"GET", "/cacerts?nonce=" + strings.Repeat("ab", 200), nil, "", "", http.StatusBadRequest},
		{"POST", "/api/v1/namespaces/default/configmaps", strings.NewReader("{not json"), "", "", http.StatusUnauthorized},
	} {
		hr, _ := http.NewRequest(r.method, base+r.path, r.body)
		if r.user != "" {
			hr.SetBasicAuth(r.user, r.pass)
		}
		resp, err := client.Do(hr)
		if err != nil {
			// A server may cut a huge unwanted upload short; that is fine as long as it stays healthy.
			t.Logf("%s %s: %v", r.method, r.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != r.want {
			t.Errorf("%s %s: HTTP %d, want %d", r.method, r.path, resp.StatusCode, r.want)
		}
	}
	resp, err := client.Get(base + "/ping")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("supervisor unhealthy after malformed requests: %v", err)
	}
	resp.Body.Close()
	if _, err := s1.Kubectl("get", "namespaces"); err != nil {
		t.Fatalf("API unhealthy after malformed requests: %v", err)
	}

	// Modes after a join, on the joiner; no secret in any log.
	for _, s := range c.Servers {
		checkModes(t, s.DataDir)
		if strings.Contains(s.CurrentLog(), "security-secret") {
			t.Errorf("%s logged the token secret", s.Name)
		}
	}
}

// tlsRoundTrip completes a TLS handshake and one read, which is where a server
// that rejects the client certificate reports it under TLS 1.3.
func tlsRoundTrip(h *harness.Host, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(conn, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	buf := make([]byte, 1)
	_, err = conn.Read(buf)
	return err
}

func checkModes(t *testing.T, dataDir string) {
	t.Helper()
	for _, d := range []string{dataDir, filepath.Join(dataDir, "server")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700 (%v)", d, fi.Mode().Perm(), err)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(dataDir, "server", "tls", "*.key"))
	etcdKeys, _ := filepath.Glob(filepath.Join(dataDir, "server", "tls", "etcd", "*.key"))
	keys = append(keys, etcdKeys...)
	keys = append(keys, filepath.Join(dataDir, "server", "token"))
	if len(keys) < 12 {
		t.Errorf("only %d key files in %s", len(keys), dataDir)
	}
	for _, k := range keys {
		if fi, err := os.Stat(k); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (%v)", k, fi.Mode().Perm(), err)
		}
	}
}
