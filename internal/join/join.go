// Package join is the protocol a new server uses to join a cluster through an
// existing server's supervisor. The joiner never trusts a CA, nor sends its
// secret, before the server has proved it belongs to the token's cluster:
//
//  1. GET /cacerts?nonce=N, unverified. A full token pins the CA by its hash; a
//     short token makes the server prove it knows the secret with an HMAC of the
//     nonce and the CA bundle, keyed by a PBKDF2 key derived from the secret.
//  2. Only then, over TLS verified against that CA, the joiner authenticates
//     with the secret and fetches the bootstrap data and the member list.
package join

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
)

// Paths served by the supervisor.
const (
	CACertsPath   = "/cacerts"
	BootstrapPath = "/v1-hakube/server-bootstrap"
	MembersPath   = "/v1-hakube/members"
	// ProofHeader carries the server's proof on /cacerts?nonce=.
	ProofHeader = "Hakube-Ca-Proof"
)

const proofIterations = 100_000

// ProofKey derives the key that proves knowledge of secret. It is slow on
// purpose: a proof seen on the wire must not make guessing the secret cheap.
func ProofKey(secret string) []byte {
	key, _ := pbkdf2.Key(sha256.New, secret, []byte("hakube-ca-proof"), proofIterations, 32)
	return key
}

// Proof is the HMAC that binds a CA bundle to a nonce under key.
func Proof(key, nonce, caBundle []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hakube-ca-proof\x00"))
	m.Write(nonce)
	m.Write(caBundle)
	return hex.EncodeToString(m.Sum(nil))
}

// Member is one datastore member, as listed to joiners.
type Member struct {
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
}
