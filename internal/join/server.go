package join

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/token"
)

// Server answers joiners. Its handlers go on the supervisor's mux.
type Server struct {
	CAFile string
	// server is the cluster's token (SetToken), which 'hakube token rotate'
	// replaces while the server runs.
	server atomic.Pointer[secretKey]
	// agent is the cluster's agent token, once known (SetAgentSecret):
	// it gets a node its credentials and nothing else.
	agent atomic.Pointer[secretKey]
	// Bootstrap returns the cluster's bootstrap data as stored in the datastore.
	Bootstrap func(ctx context.Context) (bootstrap.Data, error)
	// Members lists the datastore's members; nil when the datastore has none.
	Members func(ctx context.Context) ([]Member, error)
	// Node issues a node's credentials (ErrNameTaken, ErrUnregistered, or
	// an error saying what is wrong with the request); renewal says the node
	// asked with its certificate, not the token.
	Node func(ctx context.Context, req NodeRequest, renewal bool) (NodeCredentials, error)
}

type secretKey struct {
	secret   string
	proofKey []byte
}

func set(p *atomic.Pointer[secretKey], secret string) {
	if cur := p.Load(); cur != nil && cur.secret == secret {
		return
	}
	p.Store(&secretKey{secret: secret, proofKey: ProofKey(secret)})
}

// SetToken makes the server take secret, the cluster's token, and no
// other: it is called before Register, and again when the token is rotated.
func (s *Server) SetToken(secret string) { set(&s.server, secret) }

// SetAgentSecret makes the server take secret, the cluster's agent token,
// for node credentials (never for bootstrap data or members).
func (s *Server) SetAgentSecret(secret string) { set(&s.agent, secret) }

// Register adds the join endpoints to mux.
func (s *Server) Register(handle func(pattern string, h http.Handler)) {
	handle("GET "+CACertsPath, http.HandlerFunc(s.caCerts))
	handle("GET "+BootstrapPath, s.authenticated(false, s.bootstrap))
	handle("GET "+MembersPath, s.authenticated(false, s.members))
	handle("POST "+NodePath, s.authenticated(true, s.node))
}

func (s *Server) caCerts(w http.ResponseWriter, r *http.Request) {
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		http.Error(w, "CA not available", http.StatusServiceUnavailable)
		return
	}
	if n := r.URL.Query().Get("nonce"); n != "" {
		nonce, err := hex.DecodeString(n)
		if err != nil || len(nonce) < 16 || len(nonce) > 64 {
			http.Error(w, "nonce must be 16 to 64 bytes in hex", http.StatusBadRequest)
			return
		}
		// A proof for each token: a joiner holding either can check it.
		w.Header().Add(ProofHeader, Proof(s.server.Load().proofKey, nonce, ca))
		if a := s.agent.Load(); a != nil {
			w.Header().Add(ProofHeader, Proof(a.proofKey, nonce, ca))
		}
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(ca)
}

// authenticated requires HTTP basic auth with the token's user and secret:
// the server token's, or the agent token's where agents are allowed. There a
// node may instead present its kubelet client certificate (system:node:<name>,
// verified by the supervisor against the client CA), so a node that joined
// keeps renewing after the token is rotated; it may only ask for its own name.
func (s *Server) authenticated(agents bool, next func(w http.ResponseWriter, r *http.Request, certNode string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if node := verifiedNode(r); agents && node != "" {
			next(w, r, node)
			return
		}
		user, pass, ok := r.BasicAuth()
		valid := ok && user == token.ServerUser && subtle.ConstantTimeCompare([]byte(pass), []byte(s.server.Load().secret)) == 1
		if a := s.agent.Load(); agents && a != nil && ok && user == token.ServerUser {
			valid = valid || subtle.ConstantTimeCompare([]byte(pass), []byte(a.secret)) == 1
		}
		if !valid {
			klog.Warningf("join: refused %s from %s: wrong or missing token", r.URL.Path, r.RemoteAddr)
			// Slow down guessing.
			time.Sleep(500 * time.Millisecond)
			http.Error(w, "unauthorized: wrong or missing token", http.StatusUnauthorized)
			return
		}
		next(w, r, "")
	})
}

// verifiedNode is the node name of the kubelet client certificate the
// request's TLS connection verified, or "".
func verifiedNode(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	name, ok := strings.CutPrefix(leaf.Subject.CommonName, NodeUserPrefix)
	if !ok || name == "" || !slices.Contains(leaf.Subject.Organization, NodesGroup) {
		return ""
	}
	return name
}

func (s *Server) bootstrap(w http.ResponseWriter, r *http.Request, _ string) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	data, err := s.Bootstrap(ctx)
	if err != nil {
		klog.Errorf("join: reading bootstrap data: %v", err)
		http.Error(w, "bootstrap data not available: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	// A joining server reads the Secrets keys from the datastore once it is
	// a member; through here they would reach anyone with the token,
	// agents included.
	data.Encryption = nil
	writeJSON(w, data)
}

func (s *Server) members(w http.ResponseWriter, r *http.Request, _ string) {
	if s.Members == nil {
		writeJSON(w, []Member{})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ms, err := s.Members(ctx)
	if err != nil {
		http.Error(w, "members not available: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, ms)
}

func (s *Server) node(w http.ResponseWriter, r *http.Request, certNode string) {
	var req NodeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "malformed node request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if certNode != "" && req.Name != certNode {
		klog.Warningf("join: refused node %q from %s: it presented the certificate of node %q", req.Name, r.RemoteAddr, certNode)
		http.Error(w, fmt.Sprintf("the certificate presented is node %s's: a node renews its own credentials only", certNode), http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	creds, err := s.Node(ctx, req, certNode != "")
	switch {
	case errors.Is(err, ErrUnregistered):
		klog.Warningf("join: refused the certificate of node %q from %s: %v", req.Name, r.RemoteAddr, err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
	case errors.Is(err, ErrNameTaken):
		klog.Warningf("join: refused node %q from %s: another machine registered that name", req.Name, r.RemoteAddr)
		http.Error(w, err.Error(), http.StatusConflict)
	case errors.Is(err, errBadRequest):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		klog.Errorf("join: credentials of node %q: %v", req.Name, err)
		http.Error(w, "node credentials not available: "+err.Error(), http.StatusServiceUnavailable)
	default:
		klog.Infof("join: issued the credentials of node %s to %s", req.Name, r.RemoteAddr)
		writeJSON(w, creds)
	}
}

// errBadRequest marks an error in what the node sent.
var errBadRequest = errors.New("bad node request")

// BadRequest is an error in what the node sent, with what to fix.
func BadRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, a...))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
