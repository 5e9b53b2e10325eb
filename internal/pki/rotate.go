package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
)

// A CA's certificate file is a bundle, which a CA rotation ('hakube
// certificate rotate-ca') fills:
//
//  1. the CA's own certificate, which signs with the key beside it;
//  2. its cross-signatures: its name and key certified by the CA it
//     replaced. Every leaf it issues carries them, so a verifier that still
//     trusts only the replaced CA verifies the leaf through them;
//  3. CAs still trusted that no longer sign: the replaced one, while the
//     rotation's first step runs, so leaves it signed stay valid until
//     every holder has new ones.
//
// Verifiers trust every certificate in the file: the cross-signature
// stands for the CA itself (same name and key), and nothing else.

// parseBundle parses every PEM certificate in data.
func parseBundle(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// crossSigned says c certifies the same name and key as ca.
func crossSigned(c, ca *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, ca.RawSubject) && publicKeysEqual(ca.PublicKey, c.PublicKey)
}

// encodeCerts PEM-encodes certs.
func encodeCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// Own is the CA's own certificate alone (PEM), for signers that take one
// certificate (the controller-manager's).
func (ca *CA) Own() []byte { return encodeCerts(ca.Cert) }

// RotateCA makes a CA that replaces the one in certPEM and keyPEM: a new key,
// its self-signed certificate, and its cross-signature by the old CA. The
// bundle it returns trusts the old CA too (step 1 of a rotation; FinishCA
// ends that).
func RotateCA(certPEM, keyPEM []byte) (newCert, newKey []byte, err error) {
	old, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	name, _, _ := strings.Cut(old.Cert.Subject.CommonName, "@")
	next, err := NewCA(name)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	// Valid while both are: a cross-signature outliving the old CA proves nothing.
	notAfter := next.Cert.NotAfter
	if old.Cert.NotAfter.Before(notAfter) {
		notAfter = old.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               next.Cert.Subject,
		SubjectKeyId:          next.Cert.SubjectKeyId,
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              notAfter,
		KeyUsage:              next.Cert.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, old.Cert, next.Cert.PublicKey, old.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("cross-signing %s: %w", name, err)
	}
	cross := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(append(next.Own(), cross...), old.Own()...), next.KeyPEM, nil
}

// FinishCA drops from a CA bundle the CAs that no longer sign (step 2 of a
// rotation): it then trusts the CA alone. changed is false when there were
// none.
func FinishCA(certPEM []byte) (out []byte, changed bool, err error) {
	certs, err := parseBundle(certPEM)
	if err != nil {
		return nil, false, err
	}
	keep := []*x509.Certificate{certs[0]}
	for _, c := range certs[1:] {
		if crossSigned(c, certs[0]) {
			keep = append(keep, c)
		}
	}
	if len(keep) == len(certs) {
		return certPEM, false, nil
	}
	return encodeCerts(keep...), true, nil
}

// TrustHash names what a set of CA bundles trusts and signs with, so that
// holders can say which set they run with: 12 bytes of a sha256, in hex.
func TrustHash(bundles ...[]byte) string {
	h := sha256.New()
	for _, b := range bundles {
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// SharedTrust is the TrustHash of every CA bundle among the shared files
// (as ReadShared returns them): servers report it.
func SharedTrust(files map[string][]byte) string {
	var bundles [][]byte
	for _, n := range caNames() {
		bundles = append(bundles, files[n+".crt"])
	}
	return TrustHash(bundles...)
}

// NodeTrust is the TrustHash of what a node holds: the server and client
// CA bundles.
func NodeTrust(serverCA, clientCA []byte) string { return TrustHash(serverCA, clientCA) }

// RotateShared returns the shared files with every CA replaced (RotateCA);
// the service-account key is kept.
func RotateShared(files map[string][]byte) (map[string][]byte, error) {
	out := maps.Clone(files)
	for _, n := range caNames() {
		crt, key, err := RotateCA(files[n+".crt"], files[n+".key"])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out[n+".crt"], out[n+".key"] = crt, key
	}
	return out, nil
}

// FinishShared returns the shared files with every CA bundle finished
// (FinishCA); changed is false when none was rotating.
func FinishShared(files map[string][]byte) (out map[string][]byte, changed bool, err error) {
	out = maps.Clone(files)
	for _, n := range caNames() {
		crt, c, err := FinishCA(files[n+".crt"])
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", n, err)
		}
		out[n+".crt"], changed = crt, changed || c
	}
	return out, changed, nil
}
