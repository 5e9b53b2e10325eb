package pki

import (
	"crypto/tls"
	"os"
	"sync"

	"k8s.io/klog/v2"
)

// KeyPair is a certificate and key read from files, and read again at a
// handshake when the certificate file changed (a stat per handshake): a
// renewal rewrites the certificate while the server runs, and every new
// connection presents the new one.
type KeyPair struct {
	certFile, keyFile string

	mu   sync.Mutex
	info os.FileInfo // of the certificate file when it was read
	cert *tls.Certificate
}

// LoadKeyPair reads the pair now, so that a bad pair fails the start.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if _, err := k.current(); err != nil {
		return nil, err
	}
	return k, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.current() }

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.current()
}

// Changed reads the pair again if the certificate file changed since it
// was read, and says whether it did: a client whose server authenticates it
// at every request (the apiserver does) must close the connections it made
// with the old certificate before that expires.
func (k *KeyPair) Changed() bool {
	changed, _, _ := k.load()
	return changed
}

func (k *KeyPair) current() (*tls.Certificate, error) {
	_, c, err := k.load()
	return c, err
}

// load is the pair, read again if the certificate file is another file (a
// rename put it there) or was modified. A pair that fails to load keeps the
// last good one: a key and certificate written one after the other match
// again once both are.
func (k *KeyPair) load() (changed bool, cert *tls.Certificate, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	info, err := os.Stat(k.certFile)
	if err == nil && k.info != nil && os.SameFile(info, k.info) && info.ModTime().Equal(k.info.ModTime()) {
		return false, k.cert, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(k.certFile, k.keyFile); err == nil {
			changed = k.cert != nil
			k.cert, k.info = &c, info
			return changed, k.cert, nil
		}
	}
	if k.cert == nil {
		return false, nil, err
	}
	klog.Warningf("%s: %v; presenting the certificate read before", k.certFile, err)
	return false, k.cert, nil
}
