package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hakube/hakube/internal/fsutil"
)

// CA names, relative to the TLS directory; each has a .crt and a .key file.
const (
	ServerCA        = "server-ca"
	ClientCA        = "client-ca"
	RequestHeaderCA = "request-header-ca"
	EtcdServerCA    = "etcd/server-ca"
	EtcdPeerCA      = "etcd/peer-ca"
	// ServiceKey signs service-account tokens.
	ServiceKey = "service.key"
)

// caNames lists every cluster CA.
func caNames() []string {
	return []string{ServerCA, ClientCA, RequestHeaderCA, EtcdServerCA, EtcdPeerCA}
}

// SharedFiles lists the files that every server of a cluster holds identically
// (CAs and signing keys), relative to the TLS directory. Everything else there is
// minted locally.
func SharedFiles() []string {
	var out []string
	for _, n := range caNames() {
		// The key first: WriteShared writes in this order.
		out = append(out, n+".key", n+".crt")
	}
	return append(out, ServiceKey)
}

// Dir is a server's TLS directory.
type Dir string

// Path returns the path of a file in the directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Cert and Key return the paths of a named certificate and its key.
func (d Dir) Cert(name string) string { return d.Path(name + ".crt") }

// Key returns the path of a named key.
func (d Dir) Key(name string) string { return d.Path(name + ".key") }

// Signer is the path of the named CA's own certificate alone (CA.Own),
// beside its bundle, for the controller-manager's signers, which refuse a
// bundle.
func (d Dir) Signer(name string) string { return d.Path(name + "-signer.pem") }

// LoadCA loads the named CA from the directory.
func (d Dir) LoadCA(name string) (*CA, error) { return LoadCA(d.Cert(name), d.Key(name)) }

// ReadShared reads the shared files; it fails if any is missing.
func (d Dir) ReadShared() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, f := range SharedFiles() {
		b, err := os.ReadFile(d.Path(f))
		if err != nil {
			return nil, err
		}
		out[f] = b
	}
	return out, nil
}

// WriteShared writes shared files (keys 0600), validating names and CA pairs first
// so that bad input never lands on disk. It returns the names whose content changed.
func (d Dir) WriteShared(files map[string][]byte) ([]string, error) {
	want := map[string]bool{}
	for _, f := range SharedFiles() {
		want[f] = true
	}
	for name := range files {
		if !want[name] {
			return nil, fmt.Errorf("unexpected shared file %q", name)
		}
	}
	for _, f := range SharedFiles() {
		if _, ok := files[f]; !ok {
			return nil, fmt.Errorf("shared file %q is missing", f)
		}
	}
	signers := map[string][]byte{}
	for _, n := range caNames() {
		ca, err := ParseCA(files[n+".crt"], files[n+".key"])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		signers[n] = ca.Own()
	}
	if _, err := ParseKey(files[ServiceKey]); err != nil {
		return nil, fmt.Errorf("%s: %w", ServiceKey, err)
	}
	var changed []string
	// A key is written before its certificate, which a reader checks it
	// against; the signer file last, as the controller-manager reads it.
	for _, f := range SharedFiles() {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f, ".key") {
			mode = 0o600
		}
		wrote, err := writeIfChanged(d.Path(f), files[f], mode)
		if err != nil {
			return nil, err
		}
		if wrote {
			changed = append(changed, f)
		}
	}
	for _, n := range caNames() {
		if _, err := writeIfChanged(d.Signer(n), signers[n], 0o644); err != nil {
			return nil, err
		}
	}
	return changed, nil
}

// writeIfChanged writes data to path unless it holds data already.
func writeIfChanged(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return false, nil
	}
	return true, fsutil.WriteFile(path, data, mode)
}

// EnsureCAs creates every CA and the service-account key when none exist yet. A
// directory holding only some of them is refused: mixing old and new CAs would
// split the cluster's trust.
func (d Dir) EnsureCAs() error {
	var present, missing []string
	for _, f := range SharedFiles() {
		if _, err := os.Stat(d.Path(f)); err == nil {
			present = append(present, f)
		} else if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, f)
		} else {
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if len(present) > 0 {
		return fmt.Errorf("TLS directory %s is incomplete (missing %s); restore it from a backup or remove it to start a new cluster",
			string(d), strings.Join(missing, ", "))
	}
	files := map[string][]byte{}
	for _, n := range caNames() {
		ca, err := NewCA("hakube-" + strings.ReplaceAll(n, "/", "-"))
		if err != nil {
			return err
		}
		files[n+".crt"], files[n+".key"] = ca.CertPEM, ca.KeyPEM
	}
	sa, err := NewSigningKey()
	if err != nil {
		return err
	}
	files[ServiceKey] = sa
	_, err = d.WriteShared(files)
	return err
}
