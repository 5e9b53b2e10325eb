package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/fsutil"
)

// TestLeafLifetimes: a year and 120 days by default; HAKUBE_CERT_VALIDITY
// scales the window, the backdate and the check period; a bad value names
// the setting.
func TestLeafLifetimes(t *testing.T) {
	t.Setenv(ValidityEnv, "")
	lt, err := LeafLifetimes()
	if err != nil || lt.Validity != 365*24*time.Hour || lt.Window != RenewWindow || lt.Backdate != time.Hour || lt.CheckEvery != time.Hour {
		t.Fatalf("default: %+v %v", lt, err)
	}
	t.Setenv(ValidityEnv, "365m")
	lt, err = LeafLifetimes()
	if err != nil || lt.Window != 120*time.Minute || lt.Backdate != 36*time.Minute+30*time.Second || lt.CheckEvery != 15*time.Minute {
		t.Fatalf("365m: %+v %v", lt, err)
	}
	for _, bad := range []string{"10s", "a year", "-5m"} {
		t.Setenv(ValidityEnv, bad)
		if _, err := LeafLifetimes(); err == nil || !strings.Contains(err.Error(), ValidityEnv) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestRenewLeaves: due leaves (or the picked ones) are signed again by their
// own CA with the same key, subject, names and usages, and a new validity;
// CAs and leaves of no local CA are left alone.
func TestRenewLeaves(t *testing.T) {
	d := Dir(t.TempDir())
	if err := d.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	server, err := d.LoadCA(ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := d.LoadCA(EtcdPeerCA)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(ValidityEnv, "10m")
	serving := Leaf{CommonName: "kube-apiserver", Organization: []string{"o"}, DNSNames: []string{"kubernetes"}, IPs: []net.IP{net.IPv4(10, 0, 0, 1)}, Usage: ServerAuth}
	if err := server.IssueFiles(serving, d.Cert("serving"), d.Key("serving")); err != nil {
		t.Fatal(err)
	}
	if err := peer.IssueFiles(Leaf{CommonName: "etcd-peer", Usage: ServerAuth | ClientAuth}, d.Cert("etcd/peer"), d.Key("etcd/peer")); err != nil {
		t.Fatal(err)
	}
	foreign, err := NewCA("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if err := foreign.IssueFiles(Leaf{CommonName: "other", Usage: ClientAuth}, d.Cert("other"), d.Key("other")); err != nil {
		t.Fatal(err)
	}
	before := readCert(t, d.Cert("serving"))
	keyBefore, _ := os.ReadFile(d.Key("serving"))
	lt, _ := LeafLifetimes()  // a window of 3.3 minutes
	t.Setenv(ValidityEnv, "") // renewed for a year

	// Nothing is due now; in 9 minutes the two of a local CA are.
	if got, err := d.RenewLeaves(time.Now(), lt.Window, nil); err != nil || len(got) != 0 {
		t.Fatalf("nothing due: %+v %v", got, err)
	}
	got, err := d.RenewLeaves(time.Now().Add(9*time.Minute), lt.Window, nil)
	if err != nil || len(got) != 2 {
		t.Fatalf("due: %+v %v", got, err)
	}
	after := readCert(t, d.Cert("serving"))
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 || time.Until(after.NotAfter) < 364*24*time.Hour {
		t.Errorf("not renewed for a year: %s", after.NotAfter)
	}
	if after.Subject.String() != before.Subject.String() || strings.Join(after.DNSNames, ",") != "kubernetes" ||
		len(after.IPAddresses) != 1 || !after.IPAddresses[0].Equal(net.IPv4(10, 0, 0, 1)) ||
		len(after.ExtKeyUsage) != 1 || after.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("renewed certificate differs: %v %v %v %v", after.Subject, after.DNSNames, after.IPAddresses, after.ExtKeyUsage)
	}
	if keyAfter, _ := os.ReadFile(d.Key("serving")); string(keyAfter) != string(keyBefore) {
		t.Error("the key changed")
	}
	// The renewed pair still belongs together and chains to the CA.
	pair, err := tls.LoadX509KeyPair(d.Cert("serving"), d.Key("serving"))
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := Pool(server.CertPEM)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if o := readCert(t, d.Cert("other")); o.NotAfter.After(time.Now().Add(time.Hour)) {
		t.Error("a leaf of a foreign CA was renewed")
	}

	// Picked by name: only that one, due or not.
	peerBefore := readCert(t, d.Cert("etcd/peer"))
	got, err = d.RenewLeaves(time.Now(), lt.Window, func(n string) bool { return n == "etcd/peer" })
	if err != nil || len(got) != 1 || got[0].Name != "etcd/peer" {
		t.Fatalf("picked: %+v %v", got, err)
	}
	if readCert(t, d.Cert("etcd/peer")).SerialNumber.Cmp(peerBefore.SerialNumber) == 0 {
		t.Error("the picked leaf was not renewed")
	}
	if readCert(t, d.Cert("serving")).SerialNumber.Cmp(after.SerialNumber) != 0 {
		t.Error("a leaf not picked was renewed")
	}

	// A key issued again meanwhile (a server starting) is not paired with a
	// renewal of the old certificate.
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := EncodeKey(k)
	if err := fsutil.WriteFile(d.Key("serving"), kp, 0o600); err != nil {
		t.Fatal(err)
	}
	serial := readCert(t, d.Cert("serving")).SerialNumber
	if _, err := d.RenewLeaves(time.Now(), lt.Window, func(n string) bool { return n == "serving" }); err == nil ||
		!strings.Contains(err.Error(), "does not hold the key of its certificate") {
		t.Fatalf("a key issued again: %v", err)
	}
	if readCert(t, d.Cert("serving")).SerialNumber.Cmp(serial) != 0 {
		t.Error("a certificate was written beside a key it does not certify")
	}
}

// TestKeyPairReloads: a handshake after the certificate file was replaced
// presents the new certificate; a broken file keeps the last good one.
func TestKeyPairReloads(t *testing.T) {
	d := Dir(t.TempDir())
	if err := d.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	ca, err := d.LoadCA(ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueFiles(Leaf{CommonName: "one", Usage: ServerAuth}, d.Cert("s"), d.Key("s")); err != nil {
		t.Fatal(err)
	}
	kp, err := LoadKeyPair(d.Cert("s"), d.Key("s"))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		c, err := kp.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	first := serial()
	if serial() != first {
		t.Fatal("read again without a change")
	}
	if _, err := d.RenewLeaves(time.Now(), 0, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	want := readCert(t, d.Cert("s")).SerialNumber.String()
	if got := serial(); got != want || got == first {
		t.Fatalf("after renewal: %s, want %s", got, want)
	}
	// Replaced by a rename, as every writer here does: another file.
	if err := fsutil.WriteFile(d.Cert("s"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != want {
		t.Fatalf("a broken file: %s, want the last good %s", got, want)
	}
	if _, err := LoadKeyPair(d.Cert("s"), d.Key("s")); err == nil {
		t.Fatal("a broken pair loads at start")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
