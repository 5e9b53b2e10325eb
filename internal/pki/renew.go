package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/hakube/hakube/internal/fsutil"
)

// RenewLeaves renews leaf certificates under d that one of d's CAs signed,
// keeping their keys: with pick nil, those due (CertStatus.RenewalDue at
// now); else those pick selects by name (etcd/peer, serving-kube-apiserver).
// It returns each renewed certificate as it is now. A leaf no CA of d signed
// is left alone (an agent's are issued by a server).
func (d Dir) RenewLeaves(now time.Time, window time.Duration, pick func(name string) bool) ([]CertStatus, error) {
	certs, err := Check(now, window, d)
	if err != nil {
		return nil, err
	}
	var cas []*CA
	for _, n := range caNames() {
		ca, err := d.LoadCA(n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		cas = append(cas, ca)
	}
	var out []CertStatus
	for _, c := range certs {
		if c.CA || (pick == nil && !c.RenewalDue(window)) || (pick != nil && !pick(c.Name)) {
			continue
		}
		if err := keyMatches(strings.TrimSuffix(c.File, ".crt")+".key", c.cert); err != nil {
			return nil, err
		}
		for _, ca := range cas {
			if c.cert.CheckSignatureFrom(ca.Cert) != nil {
				continue
			}
			b, err := ca.Renew(c.cert)
			if err != nil {
				return nil, fmt.Errorf("renewing %s: %w", c.File, err)
			}
			if err := fsutil.WriteFile(c.File, b, 0o644); err != nil {
				return nil, err
			}
			renewed, err := ParseCert(b)
			if err != nil {
				return nil, err
			}
			out = append(out, status(c.File, c.Name, renewed, now, window))
			break
		}
	}
	return out, nil
}

// keyMatches checks that the key beside a certificate is the one it
// certifies: a server starting meanwhile mints a new pair, and a renewal of
// the old certificate must not land beside the new key.
func keyMatches(keyFile string, cert *x509.Certificate) error {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := ParseKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", keyFile, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return fmt.Errorf("%s does not hold the key of its certificate: it was issued again meanwhile (a server starting?); run the renewal again", keyFile)
	}
	return nil
}
