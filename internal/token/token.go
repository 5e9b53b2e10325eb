// Package token parses, formats and generates hakube join tokens.
//
// A full token is "K10<sha256 hex of the server CA bundle>::<user>:<secret>"; a
// short token is just the secret. The CA hash lets a joiner pin the cluster CA
// before it trusts it.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

const (
	prefix = "K10"
	// ServerUser is the user part of server tokens.
	ServerUser = "server"
	// NodeUser is the user part of agent tokens (--agent-token).
	NodeUser = "node"
	hashLen  = sha256.Size * 2
	// maxLen bounds what we accept so a token file cannot be abused to feed huge input.
	maxLen = 4096
)

// Token is a parsed join token. CAHash is empty for short tokens.
type Token struct {
	CAHash string
	User   string
	Secret string
}

// Parse accepts a full (K10...) or short (secret only) token.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("token is empty")
	}
	if len(s) > maxLen {
		return Token{}, fmt.Errorf("token is %d bytes long; at most %d are allowed", len(s), maxLen)
	}
	if !strings.HasPrefix(s, prefix) || !strings.Contains(s, "::") {
		if err := validSecret(s); err != nil {
			return Token{}, err
		}
		return Token{User: ServerUser, Secret: s}, nil
	}
	hash, cred, _ := strings.Cut(s[len(prefix):], "::")
	if len(hash) != hashLen || !isLowerHex(hash) {
		return Token{}, fmt.Errorf("token CA hash must be %d lowercase hex characters after %q, got %q", hashLen, prefix, hash)
	}
	user, secret, ok := strings.Cut(cred, ":")
	if !ok {
		return Token{}, errors.New(`token must have the form K10<ca-hash>::<user>:<secret>; the "<user>:" part is missing`)
	}
	if user == "" {
		return Token{}, errors.New("token user is empty")
	}
	if strings.ContainsAny(user, ": \t\r\n") {
		return Token{}, fmt.Errorf("token user %q contains a forbidden character", user)
	}
	if err := validSecret(secret); err != nil {
		return Token{}, err
	}
	return Token{CAHash: hash, User: user, Secret: secret}, nil
}

func validSecret(s string) error {
	if s == "" {
		return errors.New("token secret is empty")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r > '~' {
			return errors.New("token secret may only contain printable ASCII characters without spaces")
		}
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// String formats the token; a token without a CA hash formats as its secret alone.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Secret
	}
	return prefix + t.CAHash + "::" + t.User + ":" + t.Secret
}

// WithCA returns the full form of t pinned to the given CA bundle.
func (t Token) WithCA(caBundle []byte) Token {
	t.CAHash = HashCA(caBundle)
	if t.User == "" {
		t.User = ServerUser
	}
	return t
}

// HashCA is the pin of a CA bundle: the sha256 of its PEM bytes, in hex.
func HashCA(caBundle []byte) string {
	sum := sha256.Sum256(caBundle)
	return hex.EncodeToString(sum[:])
}

// Given is a token passed as a flag's value, or held in the file its -file
// flag names; flag (token, agent-token) names them in errors.
func Given(value, file, flag string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", flag, err)
	}
	return string(b), nil
}

// Random returns a new short token with a 32-byte random secret.
func Random() Token {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go ≥ 1.24 panics instead)
	return Token{User: ServerUser, Secret: hex.EncodeToString(b)}
}
