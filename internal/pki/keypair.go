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
	// generation counts the reads of a changed file.
	generation uint64
}

// LoadKeyPair reads the pair now, so that a bad pair fails the start.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if _, err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.load() }

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.load()
}

// Generation reads the pair again if the certificate file changed, and
// counts each such read: a client whose server authenticates it at every
// request (the apiserver does) must leave the connections it made with an
// older generation before that certificate expires. A handshake may read
// the change first; the generation still moved.
func (k *KeyPair) Generation() uint64 {
	k.load()
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.generation
}

// load is the pair, read again if the certificate file is another file (a
// rename put it there) or was modified. A pair that fails to load keeps the
// last good one: a key and certificate written one after the other match
// again once both are.
func (k *KeyPair) load() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	info, err := os.Stat(k.certFile)
	if err == nil && k.info != nil && os.SameFile(info, k.info) && info.ModTime().Equal(k.info.ModTime()) {
		return k.cert, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(k.certFile, k.keyFile); err == nil {
			k.cert, k.info = &c, info
			k.generation++
			return k.cert, nil
		}
	}
	if k.cert == nil {
		return nil, err
	}
	klog.Warningf("%s: %v; presenting the certificate read before", k.certFile, err)
	return k.cert, nil
}
