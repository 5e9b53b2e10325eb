package harness

import (
	"crypto"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
)

// ReadToken parses the token file at path (a server's server/token).
func ReadToken(t testing.TB, path string) token.Token {
	t.Helper()
	tok, err := token.Parse(string(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ReadCert parses the first certificate of the PEM file at path.
func ReadCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCert(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ReadKey parses the PEM private key at path.
func ReadKey(t testing.TB, path string) crypto.Signer {
	t.Helper()
	k, err := pki.ParseKey(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RotateCA runs 'hakube certificate rotate-ca' on s and checks that it
// replaced the server CA: s then holds a bundle of the new CA and its
// cross-signature, and no other. It returns the command's output, that
// bundle and the new CA.
func RotateCA(t testing.TB, s *Server) (out string, bundle []byte, ca *x509.Certificate) {
	t.Helper()
	file := s.Layout().TLS().Cert(pki.ServerCA)
	old := ReadCert(t, file)
	out, code := s.HakubeWithin(10*time.Minute, "certificate", "rotate-ca", "--wait", "8m")
	if code != 0 || !strings.Contains(out, "the cluster's CAs are rotated") {
		t.Fatalf("rotate-ca on %s exits %d:\n%s", s.Name, code, out)
	}
	bundle, ca = readFile(t, file), ReadCert(t, file)
	if ca.Equal(old) {
		t.Fatal("the server CA is the one the cluster had")
	}
	if n := strings.Count(string(bundle), "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("the server CA bundle holds %d certificates after the rotation, want 2", n)
	}
	return out, bundle, ca
}
