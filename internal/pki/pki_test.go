package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIssuedChainVerifiesWithSANs(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(Leaf{
		CommonName: "kube-apiserver",
		DNSNames:   []string{"kubernetes.default.svc", "my.example.com"},
		IPs:        []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.5")},
		Usage:      ServerAuth,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kubernetes.default.svc", "my.example.com", "10.0.0.5", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example.com"}); err == nil {
		t.Error("certificate verified for a name it does not carry")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate verified for client auth")
	}
	other, _ := NewCA("other")
	otherPool, _ := Pool(other.CertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: otherPool, DNSName: "my.example.com"}); err == nil {
		t.Error("certificate verified against another CA")
	}
	key, err := ParseKey(keyPEM)
	if err != nil || !publicKeysEqual(cert.PublicKey, key.Public()) {
		t.Fatalf("issued key does not match certificate: %v", err)
	}
}

func TestClientCertCarriesGroups(t *testing.T) {
	ca, _ := NewCA("client-ca")
	certPEM, _, err := ca.Issue(Leaf{CommonName: "system:admin", Organization: []string{"system:masters"}, Usage: ClientAuth})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCert(certPEM)
	pool, _ := Pool(ca.CertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "system:admin" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:masters" {
		t.Fatalf("subject %v", cert.Subject)
	}
	if _, _, err := ca.Issue(Leaf{CommonName: "x"}); err == nil {
		t.Fatal("leaf without usage was issued")
	}
}

func TestParseCARejectsMismatchedKey(t *testing.T) {
	a, _ := NewCA("a")
	b, _ := NewCA("b")
	if _, err := ParseCA(a.CertPEM, b.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: %v", err)
	}
	leafPEM, leafKey, _ := a.Issue(Leaf{CommonName: "leaf", Usage: ClientAuth})
	if _, err := ParseCA(leafPEM, leafKey); err == nil {
		t.Fatal("a leaf was accepted as CA")
	}
}

func TestEnsureCAs(t *testing.T) {
	d := Dir(filepath.Join(t.TempDir(), "tls"))
	if err := d.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	first, err := d.ReadShared()
	if err != nil {
		t.Fatal(err)
	}
	for name := range first {
		fi, _ := os.Stat(d.Path(name))
		want := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			want = 0o600
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", name, fi.Mode().Perm(), want)
		}
	}
	// Idempotent: a second call keeps the same CAs.
	if err := d.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	second, _ := d.ReadShared()
	for name := range first {
		if string(first[name]) != string(second[name]) {
			t.Fatalf("%s changed on the second EnsureCAs", name)
		}
	}
	// A partial directory is refused rather than completed with new CAs.
	if err := os.Remove(d.Cert(ClientCA)); err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureCAs(); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("partial TLS dir: %v", err)
	}
}

func TestWriteSharedValidatesBeforeWriting(t *testing.T) {
	src := Dir(filepath.Join(t.TempDir(), "src"))
	if err := src.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	files, _ := src.ReadShared()
	dst := Dir(filepath.Join(t.TempDir(), "dst"))

	bad := map[string][]byte{}
	for k, v := range files {
		bad[k] = v
	}
	bad[ServerCA+".key"] = files[ClientCA+".key"]
	if _, err := dst.WriteShared(bad); err == nil {
		t.Fatal("mismatched CA pair accepted")
	}
	if _, err := os.Stat(string(dst)); err == nil {
		t.Fatal("files written although the input was invalid")
	}
	extra := map[string][]byte{"../escape": []byte("x")}
	for k, v := range files {
		extra[k] = v
	}
	if _, err := dst.WriteShared(extra); err == nil {
		t.Fatal("unexpected file name accepted")
	}
	changed, err := dst.WriteShared(files)
	if err != nil || len(changed) != len(SharedFiles()) {
		t.Fatalf("WriteShared: %v %v", changed, err)
	}
	changed, err = dst.WriteShared(files)
	if err != nil || len(changed) != 0 {
		t.Fatalf("rewrite of identical files reported changes %v %v", changed, err)
	}
}
