package pki

import (
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Certificate states, from the check's point of view.
const (
	StateOK      = "ok"
	StateDue     = "due"
	StateExpired = "expired"
)

// CertStatus is one certificate file and how close it is to its expiry.
type CertStatus struct {
	// File is the certificate's path; Name is its path under the TLS
	// directory it was found in, without .crt (etcd/server-ca, ...).
	File      string    `json:"file"`
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	CA        bool      `json:"ca"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// SecondsLeft is negative once it has expired.
	SecondsLeft int64  `json:"secondsLeft"`
	State       string `json:"state"`
	// cert is the certificate read: a renewal starts from it.
	cert *x509.Certificate
}

// RenewalDue says a running server or node renews the certificate now: it
// expires within window, or within a third of its own life, whichever is
// nearer. A certificate issued with another HAKUBE_CERT_VALIDITY than the
// renewer's own (a node's come from a server) is so renewed once per life.
func (s CertStatus) RenewalDue(window time.Duration) bool {
	left := time.Duration(s.SecondsLeft) * time.Second
	return left <= min(window, s.NotAfter.Sub(s.NotBefore)/3)
}

// status is the certificate c, read from file, at now.
func status(file, name string, c *x509.Certificate, now time.Time, window time.Duration) CertStatus {
	left := c.NotAfter.Sub(now)
	s := CertStatus{File: file, Name: name, Subject: c.Subject.CommonName, Issuer: c.Issuer.CommonName, CA: c.IsCA,
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SecondsLeft: int64(left / time.Second), State: StateOK, cert: c}
	switch {
	case left <= 0:
		s.State = StateExpired
	case left <= window:
		s.State = StateDue
	}
	return s
}

// Check reads every .crt file under dirs (a missing dir has none) and says
// of each whether it expires within window of now.
func Check(now time.Time, window time.Duration, dirs ...Dir) ([]CertStatus, error) {
	var out []CertStatus
	for _, d := range dirs {
		root := string(d)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if p == root && os.IsNotExist(err) {
					return fs.SkipDir
				}
				return err
			}
			if e.IsDir() || !strings.HasSuffix(p, ".crt") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			c, err := ParseCert(b)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			rel, _ := filepath.Rel(root, p)
			out = append(out, status(p, strings.TrimSuffix(rel, ".crt"), c, now, window))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out, nil
}
