package pki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"sync"

	"k8s.io/klog/v2"
)

// fileValue is what read makes of a file, made again when the file is
// another file (a rename put it there) or was modified: a stat per use. One
// that fails to read keeps the last good value: a key and certificate
// written one after the other match again once both are.
type fileValue[T any] struct {
	file string
	read func() (T, error)

	mu   sync.Mutex
	info os.FileInfo // of file when it was read; nil before
	val  T
	// reads counts the reads of a changed file.
	reads uint64
}

func (f *fileValue[T]) get() (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := os.Stat(f.file)
	if err == nil && f.info != nil && os.SameFile(info, f.info) && info.ModTime().Equal(f.info.ModTime()) {
		return f.val, nil
	}
	if err == nil {
		var v T
		if v, err = f.read(); err == nil {
			f.val, f.info = v, info
			f.reads++
			return v, nil
		}
	}
	if f.info == nil {
		return f.val, err
	}
	klog.Warningf("%s: %v; keeping what was read before", f.file, err)
	return f.val, nil
}

// KeyPair is a certificate and key read from files, and read again at a
// handshake when the certificate file changed: a renewal rewrites the
// certificate while the server runs, and every new connection presents the
// new one.
type KeyPair struct{ f *fileValue[*tls.Certificate] }

// LoadKeyPair reads the pair now, so that a bad pair fails the start.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{&fileValue[*tls.Certificate]{file: certFile, read: func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		return &c, err
	}}}
	if _, err := k.f.get(); err != nil {
		return nil, err
	}
	return k, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.f.get() }

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.f.get()
}

// Generation reads the pair again if the certificate file changed, and
// counts each such read: a client whose server authenticates it at every
// request (the apiserver does) must leave the connections it made with an
// older generation before that certificate expires. A handshake may read
// the change first; the generation still moved.
func (k *KeyPair) Generation() uint64 {
	k.f.get()
	k.f.mu.Lock()
	defer k.f.mu.Unlock()
	return k.f.reads
}

// PoolFile is a cert pool read from a file, and read again when the file
// changed: a CA rotation rewrites the bundle while the server runs.
type PoolFile struct{ f *fileValue[*x509.CertPool] }

// LoadPoolFile reads the pool now, so that a bad file fails the start.
func LoadPoolFile(file string) (*PoolFile, error) {
	p := &PoolFile{&fileValue[*x509.CertPool]{file: file, read: func() (*x509.CertPool, error) { return PoolFromFile(file) }}}
	if _, err := p.f.get(); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool is the pool, read again if the file changed.
func (p *PoolFile) Pool() (*x509.CertPool, error) { return p.f.get() }
