// Package pki creates and loads the cluster's certificate authorities and mints
// the leaf certificates each server needs. CAs are shared cluster-wide (they travel
// in the bootstrap data); leaf certificates are always minted locally.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/hakube/hakube/internal/fsutil"
)

const caValidity = 10 * 365 * 24 * time.Hour

// CA is a certificate authority with its signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is the whole bundle (see RotateCA): what its verifiers trust.
	CertPEM []byte
	KeyPEM  []byte
	// chain is the CA's cross-signatures (PEM), which every certificate it
	// issues carries after its own.
	chain []byte
}

// NewCA creates a self-signed CA named cn.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", cn, now.Unix())},
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
}

// ParseCA parses a PEM certificate bundle and key and checks that they
// belong together: the bundle's first certificate is the CA's.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseBundle(certPEM)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("key does not match CA certificate %q", cert.Subject.CommonName)
	}
	ca := &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}
	for _, c := range certs[1:] {
		if !c.IsCA {
			return nil, fmt.Errorf("bundle of CA %q holds %q, which is not a CA", cert.Subject.CommonName, c.Subject.CommonName)
		}
		if crossSigned(c, cert) {
			ca.chain = append(ca.chain, encodeCerts(c)...)
		}
	}
	return ca, nil
}

// LoadCA reads a CA from its certificate and key files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return ca, nil
}

// Usage says what a leaf certificate is for.
type Usage int

// Leaf certificate usages.
const (
	ServerAuth Usage = 1 << iota
	ClientAuth
)

// Leaf describes a certificate to mint.
type Leaf struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usage        Usage
}

// Issue mints a new key and a certificate for it signed by ca, both PEM encoded.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err = ca.Sign(l, key.Public()); err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key)
	return certPEM, keyPEM, err
}

// NewKey generates a private key of the kind every leaf has.
func NewKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// Sign certifies pub, a key held by someone else, as l, signed by ca (PEM).
func (ca *CA) Sign(l Leaf, pub crypto.PublicKey) ([]byte, error) {
	var eku []x509.ExtKeyUsage
	if l.Usage&ServerAuth != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if l.Usage&ClientAuth != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	if len(eku) == 0 {
		return nil, errors.New("leaf certificate needs a usage")
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: l.CommonName, Organization: l.Organization},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: eku,
		DNSNames:    l.DNSNames,
		IPAddresses: l.IPs,
	}, pub)
}

// Renew certifies old's key again, with its subject, names and usages, for
// a new validity (PEM). Keeping the key means a renewal rewrites one file,
// atomically: no reader ever sees a certificate that does not match its key.
func (ca *CA) Renew(old *x509.Certificate) ([]byte, error) {
	if err := old.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("%q is not signed by %q: %w", old.Subject.CommonName, ca.Cert.Subject.CommonName, err)
	}
	return ca.sign(&x509.Certificate{
		Subject:     old.Subject,
		KeyUsage:    old.KeyUsage,
		ExtKeyUsage: old.ExtKeyUsage,
		DNSNames:    old.DNSNames,
		IPAddresses: old.IPAddresses,
	}, old.PublicKey)
}

// sign completes tmpl with a serial and the leaf validity, and signs it.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	lt, err := LeafLifetimes()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-lt.Backdate), now.Add(lt.Validity)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.chain...), nil
}

// EncodePublicKey PEM-encodes a public key (PKIX).
func EncodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey parses a PEM public key (PKIX).
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("no PEM public key found")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

// IssueFiles mints a leaf and writes it to certFile (0644) and keyFile (0600).
func (ca *CA) IssueFiles(l Leaf, certFile, keyFile string) error {
	certPEM, keyPEM, err := ca.Issue(l)
	if err != nil {
		return fmt.Errorf("issuing %s: %w", l.CommonName, err)
	}
	if err := fsutil.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFile(certFile, certPEM, 0o644)
}

// NewSigningKey returns a PEM-encoded private key, used for service-account
// tokens. It is SEC 1 ("EC PRIVATE KEY"): the apiserver's public-key reader does
// not accept PKCS#8.
func NewSigningKey() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// EncodeKey PEM-encodes a private key in PKCS#8.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses a PEM private key (PKCS#8, PKCS#1 or SEC 1).
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("private key cannot sign")
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key format")
}

// ParseCert parses the first PEM certificate in data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate found")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Pool returns a cert pool holding the PEM certificates in data.
func Pool(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// PoolFromFile returns a cert pool holding the PEM certificates in file.
func PoolFromFile(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := Pool(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return pool, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
