package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
)

// serverToken is where this server keeps the cluster's token: its data dir,
// and its join endpoint. 'hakube token rotate' replaces the token while the
// server runs, or while it is stopped; the server adopts the new one.
type serverToken struct {
	layout layout.Layout
	join   *join.Server
}

// adopt makes secret this server's token, pinned to the cluster's server
// CA. replaced is the token it held before ("" if the same): its hash is
// kept, so a restart with it (an old --token in a service's configuration)
// takes the new one instead of being refused.
func (t serverToken) adopt(replaced, secret string) error {
	ca, err := os.ReadFile(t.layout.TLS().Cert(pki.ServerCA))
	if err != nil {
		return err
	}
	if replaced != "" && replaced != secret {
		if err := addHash(t.layout.ReplacedTokens(), tokenHash(replaced)); err != nil {
			return err
		}
	}
	full := token.Token{User: token.ServerUser, Secret: secret}.WithCA(ca)
	if err := fsutil.WriteFile(t.layout.Token(), []byte(full.String()+"\n"), 0o600); err != nil {
		return err
	}
	t.join.SetToken(secret)
	if replaced != "" && replaced != secret {
		klog.Infof("the cluster's token was rotated: this server takes only the new one from now on (written to %s); "+
			"give it in place of the old one wherever this server's configuration names a token", t.layout.Token())
	}
	return nil
}

// tokenHash names a replaced token without keeping it.
func tokenHash(secret string) string {
	sum := sha256.Sum256([]byte("hakube-replaced-token\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// readHashes reads a file of hashes, one per line (none if it is missing).
func readHashes(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return strings.Fields(string(b)), err
}

// addHash adds h to the file of hashes at path.
func addHash(path, h string) error {
	hashes, err := readHashes(path)
	if err != nil || slices.Contains(hashes, h) {
		return err
	}
	return fsutil.WriteFile(path, []byte(strings.Join(append(hashes, h), "\n")+"\n"), 0o600)
}

// writeCAs writes the cluster's CA files (pki.Dir.WriteShared), keeping the
// pin of the server CA they replace, so a restart with a token pinned to it
// (a full token in a configuration) is still this cluster's after 'hakube
// certificate rotate-ca'. It returns the names of the files that changed.
func writeCAs(l layout.Layout, files map[string][]byte) ([]string, error) {
	old, err := os.ReadFile(l.TLS().Cert(pki.ServerCA))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	case string(old) != string(files[pki.ServerCA+".crt"]):
		if err := addHash(l.ReplacedCAs(), token.HashCA(old)); err != nil {
			return nil, err
		}
	}
	return l.TLS().WriteShared(files)
}

// resolveToken picks the token: the one given, else the one stored in the
// data dir, else a new random one. A given token that 'hakube token rotate'
// replaced, or pinned to a CA 'hakube certificate rotate-ca' replaced, gives
// way to the stored one, except for a snapshot restore. Any other given
// token is tried: the datastore tells whether it is the cluster's
// (clusterBootstrap).
func resolveToken(c Config) (token.Token, error) {
	given, err := token.Given(c.Token, c.TokenFile, "token")
	if err != nil {
		return token.Token{}, err
	}
	l := c.layout()
	stored, err := storedToken(l)
	if err != nil {
		return token.Token{}, err
	}
	if given == "" {
		if stored != nil {
			return *stored, nil
		}
		return token.Random(), nil
	}
	t, err := token.Parse(given)
	if err != nil {
		return token.Token{}, fmt.Errorf("malformed token: %w", err)
	}
	if c.ClusterResetRestorePath != "" {
		// A snapshot is opened by the token it was taken under, replaced
		// or not, pinned to the CA of its time.
		return t, nil
	}
	if stored != nil && stored.Secret == t.Secret && t.CAHash != "" && t.CAHash != stored.CAHash {
		if hashes, err := readHashes(l.ReplacedCAs()); err != nil {
			return token.Token{}, err
		} else if slices.Contains(hashes, t.CAHash) {
			klog.Warningf("the token given is pinned to a CA 'hakube certificate rotate-ca' replaced: this server uses the token in %s, "+
				"pinned to the cluster's CA; give that one in its configuration", l.Token())
			return *stored, nil
		}
	}
	if stored != nil && stored.Secret != t.Secret {
		if hashes, err := readHashes(l.ReplacedTokens()); err != nil {
			return token.Token{}, err
		} else if slices.Contains(hashes, tokenHash(t.Secret)) {
			klog.Warningf("the token given was replaced by 'hakube token rotate': this server uses the cluster's current one, in %s; "+
				"give that one in its configuration", l.Token())
			return *stored, nil
		}
	}
	return t, nil
}

// storedToken is the token in the data dir, nil when there is none.
func storedToken(l layout.Layout) (*token.Token, error) {
	path := l.Token()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		// ENOTDIR: the data dir is unusable, which its own check reports clearly.
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	t, err := token.Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("the token stored in %s is malformed (%v); restore it or remove it and pass --token", path, err)
	}
	return &t, nil
}
