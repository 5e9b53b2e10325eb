package harness

import (
	"crypto"
	"crypto/x509"
	"os"
	"testing"

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
