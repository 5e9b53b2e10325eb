// Package join is the protocol a new server uses to join a cluster through an
// existing server's supervisor. The joiner never trusts a CA, nor sends its
// secret, before the server has proved it belongs to the token's cluster:
//
//  1. GET /cacerts?nonce=N, unverified. A full token pins the CA by its hash; a
//     short token makes the server prove it knows the secret with an HMAC of the
//     nonce and the CA bundle, keyed by a PBKDF2 key derived from the secret.
//  2. Only then, over TLS verified against that CA, the joiner authenticates
//     with the secret and fetches the bootstrap data and the member list.
//
// A node (an agent, or a server's own node) takes the same first step, then
// asks for its credentials only: it sends its name, its addresses, the public
// keys of the keys it keeps and a node password of its own, and receives the
// CA certificates, a kubelet client certificate (system:node:<name> in
// system:nodes) and a kubelet serving certificate. It never receives a CA key
// or the bootstrap data. The first node to register a name binds it to its
// password: another machine asking for that name is refused.
//
// A cluster may have an agent token besides the server token (--agent-token):
// it gets a node its credentials, and is refused the bootstrap data and the
// members. For a short token the server sends a proof for each token it
// takes, so a joiner holding either can check the CA.
//
// A node that joined before asks for its credentials again (at each start,
// and to renew them) over TLS verified against the CA it keeps, presenting
// its kubelet client certificate instead of a token, for its own name only
// and while its registration exists. A rotated token ('hakube token
// rotate') therefore stops new joins and leaves the nodes that joined
// working. A node whose certificate expired (it was off for its whole
// life), or did not get it through (ErrCertificateRefused), joins with the
// token again, checking the CA against it first.
package join

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// Paths served by the supervisor.
const (
	CACertsPath   = "/cacerts"
	BootstrapPath = "/v1-hakube/server-bootstrap"
	MembersPath   = "/v1-hakube/members"
	NodePath      = "/v1-hakube/node"
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

// NodeRequest is what a node sends for its credentials.
type NodeRequest struct {
	Name string   `json:"name"`
	IPs  []string `json:"ips"`
	// Password binds the name to the machine that registered it first.
	Password string `json:"password"`
	// ClientKey (the kubelet's), ServingKey, ProxyKey (kube-proxy's) and
	// NetworkKey (flannel's) are PEM public keys; the private keys stay on
	// the node.
	ClientKey  string `json:"clientKey"`
	ServingKey string `json:"servingKey"`
	ProxyKey   string `json:"proxyKey"`
	NetworkKey string `json:"networkKey"`
}

// NodeCredentials is what a node receives: certificates only, PEM.
type NodeCredentials struct {
	// ServerCA verifies the supervisor and the apiserver; ClientCA the
	// clients of the kubelet (the apiserver).
	ServerCA    string `json:"serverCA"`
	ClientCA    string `json:"clientCA"`
	ClientCert  string `json:"clientCert"`
	ServingCert string `json:"servingCert"`
	// ProxyCert is user system:kube-proxy; NetworkCert is flannel's user,
	// NetworkUser, which may read and annotate every Node (the Node
	// authorizer lets a kubelet see only its own).
	ProxyCert   string      `json:"proxyCert"`
	NetworkCert string      `json:"networkCert"`
	Cluster     NodeCluster `json:"cluster"`
}

// A kubelet's client certificate is user NodeUserPrefix+<name> in group
// NodesGroup, as the Node authorizer wants it.
const (
	NodeUserPrefix = "system:node:"
	NodesGroup     = "system:nodes"
)

// NetworkUser is the pod network's identity (flannel), bound to its role by
// the server's RBAC manifest.
const NetworkUser = "system:hakube-flannel"

// NodeCluster is the cluster configuration a node's daemons need.
type NodeCluster struct {
	ClusterCIDR   string `json:"clusterCIDR"`
	ServiceCIDR   string `json:"serviceCIDR"`
	ClusterDNS    string `json:"clusterDNS"`
	ClusterDomain string `json:"clusterDomain"`
}

// ErrNameTaken refuses a node whose name another machine registered.
var ErrNameTaken = errors.New("name taken")

// ErrUnregistered refuses a node's certificate for a name whose registration
// was deleted (its node password Secret): it joins again with the token, so
// deleting a node's registration cuts it off once its token is rotated.
var ErrUnregistered = errors.New("this node's registration was deleted: it joins again with the token")

// Member is one datastore member, as listed to joiners.
type Member struct {
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
}
