package metrics

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hakube/hakube/internal/pki"
)

// TestCertificates: each certificate's seconds to expiry and the nearest,
// served with the rest; a renewal shows at the next scrape.
func TestCertificates(t *testing.T) {
	d := pki.Dir(t.TempDir())
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Cert("server-ca"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := New(Config{Hosts: []string{"127.0.0.1"}, Port: port, Collectors: func() []prometheus.Collector { return []prometheus.Collector{Certificates(d)} }})
	if err := s.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	// A CA lasts 10 years (3.15e8 s), a leaf one (3.15e7 s).
	_, body := get(t, url)
	for _, re := range []string{
		`hakube_certificate_expiry_seconds\{ca="true",dir="` + regexp.QuoteMeta(string(d)) + `",name="server-ca"\} 3\.15[0-9]*e\+08`,
		`hakube_certificate_nearest_expiry_seconds 3\.15[0-9]*e\+08`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("metrics lack %s:\n%s", re, body)
		}
	}
	if err := ca.IssueFiles(pki.Leaf{CommonName: "kube-apiserver", Usage: pki.ServerAuth}, d.Cert("serving"), d.Key("serving")); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, url)
	for _, re := range []string{
		`hakube_certificate_expiry_seconds\{ca="false",dir="[^"]*",name="serving"\} 3\.15[0-9]*e\+07`,
		`hakube_certificate_nearest_expiry_seconds 3\.15[0-9]*e\+07`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("metrics lack %s:\n%s", re, body)
		}
	}
}
