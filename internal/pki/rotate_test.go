package pki

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
)

// verify checks the leaf of chainPEM (leaf first) against the bundle roots.
func verify(t *testing.T, chainPEM, roots []byte) error {
	t.Helper()
	certs, err := parseBundle(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(roots)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestRotateCAKeepsTrustBothWays(t *testing.T) {
	old, err := NewCA("hakube-client-ca")
	if err != nil {
		t.Fatal(err)
	}
	oldLeaf, _, err := old.Issue(Leaf{CommonName: "old", Usage: ClientAuth})
	if err != nil {
		t.Fatal(err)
	}
	step1, key, err := RotateCA(old.CertPEM, old.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseCA(step1, key)
	if err != nil {
		t.Fatal(err)
	}
	if next.Cert.Equal(old.Cert) || !strings.HasPrefix(next.Cert.Subject.CommonName, "hakube-client-ca@") {
		t.Fatalf("new CA %q is not a new CA of the same name", next.Cert.Subject.CommonName)
	}
	newLeaf, keyPEM, err := next.Issue(Leaf{CommonName: "new", Usage: ClientAuth})
	if err != nil {
		t.Fatal(err)
	}
	if certs, _ := parseBundle(newLeaf); len(certs) != 2 {
		t.Fatalf("a leaf of the new CA carries %d certificates, want itself and the cross-signature", len(certs))
	}
	if _, err := tls.X509KeyPair(newLeaf, keyPEM); err != nil {
		t.Fatalf("a leaf with its chain does not load as a key pair: %v", err)
	}
	step2, changed, err := FinishCA(step1)
	if err != nil || !changed {
		t.Fatalf("FinishCA(step 1) changed=%v, %v", changed, err)
	}
	finished, err := ParseCA(step2, key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := finished.Renew(mustParse(t, newLeaf))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what        string
		leaf, roots []byte
		ok          bool
	}{
		{"new leaf, verifier trusting the old CA only", newLeaf, old.CertPEM, true},
		{"new leaf, step 1 bundle", newLeaf, step1, true},
		{"new leaf, step 2 bundle", newLeaf, step2, true},
		{"renewed leaf, verifier trusting the old CA only", renewed, old.CertPEM, true},
		{"old leaf, step 1 bundle", oldLeaf, step1, true},
		{"old leaf, step 2 bundle", oldLeaf, step2, false},
		{"old leaf, the new CA alone", oldLeaf, next.Own(), false},
	} {
		if err := verify(t, c.leaf, c.roots); (err == nil) != c.ok {
			t.Errorf("%s: verified=%v (%v), want %v", c.what, err == nil, err, c.ok)
		}
	}
	if again, changed, err := FinishCA(step2); err != nil || changed || string(again) != string(step2) {
		t.Errorf("FinishCA of a finished bundle changed it (%v, %v)", changed, err)
	}
	if TrustHash(step1) == TrustHash(step2) || TrustHash(step1, step2) == TrustHash(step2, step1) {
		t.Error("TrustHash does not tell bundles apart")
	}
	// A second rotation starts from the CA alone: the first one's old CA is
	// not carried on.
	third, _, err := RotateCA(step2, key)
	if err != nil {
		t.Fatal(err)
	}
	if certs, _ := parseBundle(third); len(certs) != 3 || !certs[2].Equal(next.Cert) {
		t.Errorf("a second rotation's bundle holds %d certificates, want the newest CA, its cross-signature and the CA it replaces", len(certs))
	}
}

func mustParse(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCert(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
