// Package bootstrap keeps the material every server of a cluster shares (CAs,
// signing keys, critical settings) in the datastore, encrypted with a key derived
// from the join token. Any server can then serve a joiner, and a server whose
// files are gone can recover them.
package bootstrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hakube/hakube/internal/secretsencrypt"
)

// Prefix is where bootstrap data lives in the datastore.
const Prefix = "/hakube/bootstrap/"

const (
	saltLen    = 16
	iterations = 100_000
	// version is 2 when the data holds Secrets keys: a hakube of version 1
	// would refuse it rather than run the cluster's apiserver without them
	// (it would write Secrets in clear and fail to read the others).
	version         = 1
	versionWithKeys = 2
)

// Critical holds settings that must be equal on every server of a cluster.
type Critical struct {
	ClusterCIDR   string `json:"clusterCIDR"`
	ServiceCIDR   string `json:"serviceCIDR"`
	ClusterDNS    string `json:"clusterDNS"`
	ClusterDomain string `json:"clusterDomain"`
	Datastore     string `json:"datastore"`
}

// Mismatches lists every flag whose value differs from the cluster's, as
// "--flag is X here but Y in the cluster".
func (c Critical) Mismatches(cluster Critical) []string {
	var out []string
	check := func(flag, mine, theirs string) {
		if mine != theirs {
			out = append(out, fmt.Sprintf("%s is %q here but %q in the cluster", flag, mine, theirs))
		}
	}
	check("--cluster-cidr", c.ClusterCIDR, cluster.ClusterCIDR)
	check("--service-cidr", c.ServiceCIDR, cluster.ServiceCIDR)
	check("--cluster-dns", c.ClusterDNS, cluster.ClusterDNS)
	check("--cluster-domain", c.ClusterDomain, cluster.ClusterDomain)
	check("datastore kind", c.Datastore, cluster.Datastore)
	return out
}

// MismatchError reports critical settings that differ from the cluster's.
type MismatchError []string

func (m MismatchError) Error() string {
	return "critical configuration differs from the cluster's: " + strings.Join(m, "; ") +
		". Use the cluster's values (they cannot change after the cluster is created)"
}

// Data is the shared material of a cluster.
type Data struct {
	Version  int               `json:"version"`
	Files    map[string][]byte `json:"files"`
	Critical Critical          `json:"critical"`
	// Encryption is the keys of Secrets at rest; nil when the cluster never
	// had any (created without --secrets-encryption, never enabled).
	Encryption *secretsencrypt.State `json:"encryption,omitempty"`
	// AgentSecret is the agent token's secret (--agent-token); empty when
	// agents join with the server token.
	AgentSecret string `json:"agentSecret,omitempty"`
	// ReplacedBy is set, alone, in what 'hakube token rotate' leaves under
	// the token it replaced: the new token's secret. A server that held the
	// old token, running or stopped, follows it to the cluster's data.
	ReplacedBy string `json:"replacedBy,omitempty"`
	// CAFinishing is set while the last step of 'hakube certificate
	// rotate-ca' rolls out (the old CAs no longer trusted), so that running
	// the command again waits for it instead of rotating anew.
	CAFinishing bool `json:"caFinishing,omitempty"`
	// Pending marks the copy a rotation makes under the new token until the
	// old token's record names it: a rotation that never finished leaves no
	// second cluster behind a token the operator believes refused.
	Pending bool `json:"pending,omitempty"`
}

// Key is the datastore key for data encrypted with secret. It is a hash, so
// servers started with another token find no data under their own key.
func Key(secret string) string {
	sum := sha256.Sum256([]byte("hakube-bootstrap\x00" + secret))
	return Prefix + hex.EncodeToString(sum[:6])
}

// Encrypt seals d with AES-256-GCM under a PBKDF2 key from secret.
func Encrypt(secret string, d Data) ([]byte, error) {
	d.Version = version
	if d.Encryption != nil {
		d.Version = versionWithKeys
	}
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := newAEAD(secret, salt)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(append(salt, nonce...), aead.Seal(nil, nonce, plain, []byte(Prefix))...)
	return out, nil
}

// ErrWrongToken means the data was encrypted with another token.
var ErrWrongToken = errors.New("bootstrap data cannot be decrypted with this token")

// Decrypt opens data sealed by Encrypt.
func Decrypt(secret string, blob []byte) (Data, error) {
	if len(blob) < saltLen+12+16 {
		return Data{}, errors.New("bootstrap data is truncated")
	}
	aead, err := newAEAD(secret, blob[:saltLen])
	if err != nil {
		return Data{}, err
	}
	rest := blob[saltLen:]
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(Prefix))
	if err != nil {
		return Data{}, ErrWrongToken
	}
	var d Data
	if err := json.Unmarshal(plain, &d); err != nil {
		return Data{}, fmt.Errorf("bootstrap data is corrupt: %w", err)
	}
	if d.Version != version && d.Version != versionWithKeys {
		return Data{}, fmt.Errorf("bootstrap data has version %d; this hakube reads versions %d and %d", d.Version, version, versionWithKeys)
	}
	return d, nil
}

func newAEAD(secret string, salt []byte) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, secret, salt, iterations, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
