// Package secretsencrypt holds the cluster's keys for Secrets at rest and
// renders them as the apiserver's EncryptionConfiguration. The keys are the
// cluster's, not a server's: they travel in the bootstrap data (encrypted
// with the token), so every server writes the same file and a snapshot
// restored with the token reads its Secrets back.
//
// The provider is secretbox (XSalsa20-Poly1305 with a 32-byte key): of the
// apiserver's local providers it is the one Kubernetes recommends; aescbc is
// open to padding oracles and aesgcm needs a new key every 200,000 writes.
package secretsencrypt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Provider is the apiserver's name of the provider the keys are for; a
// value it wrote starts with "k8s:enc:secretbox:v1:<key name>:".
const Provider = "secretbox"

// prefix is what every value the provider wrote starts with.
const prefix = "k8s:enc:" + Provider + ":v1:"

// KeySize is secretbox's key length.
const KeySize = 32

// State is the cluster's keys.
type State struct {
	// Keys are every key a stored Secret may be encrypted with, newest first.
	Keys []Key `json:"keys"`
	// Active names the key new writes use; "" writes Secrets in clear (the
	// keys still read what they wrote).
	Active string `json:"active"`
	// Change is the command (rotate-keys, enable, disable) that began
	// changing the keys and has not finished: running it again resumes it.
	Change string `json:"change,omitempty"`
	// ChangeID tells that change from any other run of the same command.
	ChangeID string `json:"changeID,omitempty"`
}

// Key is one secretbox key.
type Key struct {
	Name    string    `json:"name"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
}

// New is a state with one new key, active.
func New(now time.Time) (*State, error) {
	k, err := NewKey(now)
	if err != nil {
		return nil, err
	}
	return &State{Keys: []Key{k}, Active: k.Name}, nil
}

// NewKey makes a key named after its creation time.
func NewKey(now time.Time) (Key, error) {
	secret := make([]byte, KeySize)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, err
	}
	// The name is in every value the key wrote: the date says which key a
	// Secret is under at a glance.
	return Key{Name: "secretbox-" + now.UTC().Format("20060102T150405Z"), Secret: secret, Created: now.UTC()}, nil
}

var keyName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Validate checks what the bootstrap data carries before a server writes it.
func (s *State) Validate() error {
	if s == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, k := range s.Keys {
		if !keyName.MatchString(k.Name) {
			return fmt.Errorf("secrets encryption key name %q is not a name the apiserver accepts", k.Name)
		}
		if seen[k.Name] {
			return fmt.Errorf("secrets encryption key %s appears twice", k.Name)
		}
		seen[k.Name] = true
		if len(k.Secret) != KeySize {
			return fmt.Errorf("secrets encryption key %s has %d bytes, want %d", k.Name, len(k.Secret), KeySize)
		}
	}
	if s.Active != "" && !seen[s.Active] {
		return fmt.Errorf("the active secrets encryption key %s is not among the keys", s.Active)
	}
	return nil
}

// Config is the apiserver's EncryptionConfiguration (JSON, which the
// apiserver reads as YAML): the active key first, so new writes use it; the
// other keys after it, so what they wrote stays readable; identity last, so
// Secrets written in clear before encryption was on are read too. With no
// active key identity comes first. A nil state (a cluster that never had
// keys) is identity alone: the apiserver always has a file to reload, so
// 'hakube secrets-encrypt enable' needs no restart.
func (s *State) Config() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	type secret struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}
	var keys []secret
	active := ""
	if s != nil {
		active = s.Active
		for _, k := range s.ordered() {
			keys = append(keys, secret{k.Name, base64.StdEncoding.EncodeToString(k.Secret)})
		}
	}
	identity := map[string]any{"identity": map[string]any{}}
	var providers []any
	box := map[string]any{Provider: map[string]any{"keys": keys}}
	switch {
	case len(keys) == 0:
		providers = []any{identity}
	case active == "":
		providers = []any{identity, box}
	default:
		providers = []any{box, identity}
	}
	return json.MarshalIndent(map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "EncryptionConfiguration",
		"resources":  []any{map[string]any{"resources": []string{"secrets"}, "providers": providers}},
	}, "", "  ")
}

// Enabled reports whether new Secrets are written encrypted.
func (s *State) Enabled() bool { return s != nil && s.Active != "" }

// Hash is how the apiserver names a configuration it loaded (its metric
// apiserver_encryption_config_controller_last_config_info): the SHA-256 of
// the file's bytes.
func Hash(config []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(config)) }

// ordered is the keys with the active one first.
func (s *State) ordered() []Key {
	out := make([]Key, 0, len(s.Keys))
	for _, k := range s.Keys {
		if k.Name == s.Active {
			out = append(out, k)
		}
	}
	for _, k := range s.Keys {
		if k.Name != s.Active {
			out = append(out, k)
		}
	}
	return out
}

// KeyOf says which key wrote a stored value: "" when it is in clear.
func KeyOf(value []byte) (string, error) {
	if !strings.HasPrefix(string(value), "k8s:enc:") {
		return "", nil
	}
	rest, ok := strings.CutPrefix(string(value), prefix)
	if !ok {
		return "", errors.New("encrypted by a provider other than " + Provider)
	}
	name, _, ok := strings.Cut(rest, ":")
	if !ok {
		return "", errors.New("an encrypted value without a key name")
	}
	return name, nil
}
