package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheck: every .crt under the directories is listed, soonest expiry
// first, and is due within the window and expired after its end.
func TestCheck(t *testing.T) {
	d := Dir(t.TempDir())
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d.Path("etcd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Cert("etcd/server-ca"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueFiles(Leaf{CommonName: "kube-apiserver", Usage: ServerAuth}, d.Cert("serving"), d.Key("serving")); err != nil {
		t.Fatal(err)
	}
	missing := Dir(filepath.Join(t.TempDir(), "none"))
	now := time.Now()
	for _, c := range []struct {
		at            time.Duration
		leaf, caState string
	}{
		{0, StateOK, StateOK},
		{300 * 24 * time.Hour, StateDue, StateOK},
		{366 * 24 * time.Hour, StateExpired, StateOK},
		{11 * 365 * 24 * time.Hour, StateExpired, StateExpired},
	} {
		got, err := Check(now.Add(c.at), RenewWindow, d, missing)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Name != "serving" || got[1].Name != "etcd/server-ca" {
			t.Fatalf("at +%s: %+v", c.at, got)
		}
		leaf, root := got[0], got[1]
		if leaf.State != c.leaf || root.State != c.caState || leaf.CA || !root.CA || leaf.Subject != "kube-apiserver" ||
			!strings.HasPrefix(leaf.Issuer, "test-ca@") || leaf.File != d.Cert("serving") {
			t.Errorf("at +%s: leaf %+v, CA %+v; want %s and %s", c.at, leaf, root, c.leaf, c.caState)
		}
		if want := int64((365*24*time.Hour - c.at) / time.Second); leaf.SecondsLeft > want || leaf.SecondsLeft < want-60 {
			t.Errorf("at +%s: %d s left, want about %d", c.at, leaf.SecondsLeft, want)
		}
	}

	if err := os.WriteFile(d.Cert("broken"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(now, RenewWindow, d); err == nil || !strings.Contains(err.Error(), "broken.crt") {
		t.Fatalf("a broken file: %v", err)
	}
}
