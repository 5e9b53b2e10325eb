package harness

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// secretFile reports whether a file under a data dir holds a credential or
// data (CIS benchmark sections 1.1 and 4.1: keys, kubeconfigs, the kubelet's
// configuration, the datastore): its mode must give nobody else access.
func secretFile(path string) bool {
	base := filepath.Base(path)
	for _, suffix := range []string{".key", "kubeconfig"} {
		if strings.HasSuffix(base, suffix) {
			return true
		}
	}
	// The datastore's SQLite files (containerd's own metadata is not ours).
	if strings.Contains(path, "/server/db/") && (strings.HasSuffix(base, ".db") || strings.Contains(base, ".db-")) {
		return true
	}
	// The kubelet's client certificates from the CSR API hold their key.
	if strings.HasPrefix(base, "kubelet-client-") && strings.HasSuffix(base, ".pem") {
		return true
	}
	switch base {
	case "token", "token-replaced", "agent-token", "node-password", "kubelet.yaml", "encryption-config.json":
		return true
	}
	return strings.Contains(path, "/cred/")
}

// CheckFileModes fails the test when the data dir is open to others, or one
// of its credential or data files is, and returns how many files it checked.
func CheckFileModes(t testing.TB, dataDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case path == dataDir && info.Mode().Perm()&0o077 != 0:
			t.Errorf("%s has mode %v: others can enter it", path, info.Mode().Perm())
		case info.Mode().IsRegular() && secretFile(path):
			n++
			if info.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v, want 0600 or stricter", path, info.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
