package join

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
)

// maxResponse bounds what a joiner reads from a server it may not trust yet.
const maxResponse = 4 << 20

// ErrUnreachable means the server did not answer; the caller may retry.
var ErrUnreachable = errors.New("cannot reach the server")

// ErrUnavailable means a verified server did not answer a request, or
// could not yet (5xx: its apiserver is starting); the caller may retry.
var ErrUnavailable = errors.New("the server is not available")

// ErrCertificateRefused means a node's certificate did not get it through
// (NewNodeClient): the server refused it, or the server's certificate is
// not from the CA the node holds (the cluster was recreated). The node asks
// with the token instead, which checks the CA again.
var ErrCertificateRefused = errors.New("the node's certificate was refused")

// ErrPinMismatch means the server's CA bundle is not the one a full token
// pins: another cluster, or this one after 'hakube certificate rotate-ca'.
var ErrPinMismatch = errors.New("the server's CA is not the one the token pins")

// Client joins through the server at URL.
type Client struct {
	URL     string
	Token   token.Token
	trusted *http.Client
	CA      []byte
	// cert, when set, authenticates instead of the token (NewNodeClient).
	cert *tls.Certificate
}

// NewClient validates the server URL.
func NewClient(serverURL string, tok token.Token) (*Client, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--server %q must be an https URL such as https://10.0.0.1:6443", serverURL)
	}
	return &Client{URL: strings.TrimSuffix(serverURL, "/"), Token: tok}, nil
}

// NewVerifiedClient is a client of the server at serverURL that trusts ca,
// which a join verified before (a node's server-ca.crt).
func NewVerifiedClient(serverURL string, tok token.Token, ca []byte) (*Client, error) {
	c, err := NewClient(serverURL, tok)
	if err != nil {
		return nil, err
	}
	return c, c.trust(ca)
}

// NewNodeClient is a client of the server at serverURL that trusts ca and
// authenticates with cert, a node's kubelet client certificate: a node that
// joined needs no token to ask for its own credentials again.
func NewNodeClient(serverURL string, ca []byte, cert tls.Certificate) (*Client, error) {
	c, err := NewClient(serverURL, token.Token{})
	if err != nil {
		return nil, err
	}
	c.cert = &cert
	return c, c.trust(ca)
}

// VerifyCA fetches the server's CA and checks it against the token: by the
// token's CA hash, or by the server's proof for a short token. Only after this
// does the client trust the CA.
func (c *Client) VerifyCA(ctx context.Context) error {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	unverified := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		// The CA is checked below against the token before anything else is sent.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+CACertsPath+"?nonce="+hex.EncodeToString(nonce), nil)
	if err != nil {
		return err
	}
	resp, err := unverified.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.URL, err)
	}
	defer resp.Body.Close()
	ca, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s answered %s", c.URL, CACertsPath, resp.Status)
	}
	if c.Token.CAHash != "" {
		if got := token.HashCA(ca); got != c.Token.CAHash {
			return fmt.Errorf("CA check failed (%w): the server at %s presents a CA with hash %s, but the token pins %s; "+
				"the token belongs to another cluster (or to this one before 'hakube certificate rotate-ca'), "+
				"or something is intercepting the connection", ErrPinMismatch, c.URL, got, c.Token.CAHash)
		}
	} else {
		want := Proof(ProofKey(c.Token.Secret), nonce, ca)
		if !slices.ContainsFunc(resp.Header.Values(ProofHeader), func(p string) bool { return hmac.Equal([]byte(p), []byte(want)) }) {
			return fmt.Errorf("CA check failed: the server at %s could not prove it knows the token; "+
				"the token is wrong, or the address is not a server of this cluster", c.URL)
		}
	}
	if err := c.trust(ca); err != nil {
		return fmt.Errorf("the server at %s sent no usable CA: %w", c.URL, err)
	}
	return nil
}

func (c *Client) trust(ca []byte) error {
	pool, err := pki.Pool(ca)
	if err != nil {
		return err
	}
	c.CA = ca
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.cert != nil {
		cfg.Certificates = []tls.Certificate{*c.cert}
	}
	c.trusted = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	return nil
}

// CloseIdleConnections closes the connections a finished client keeps.
func (c *Client) CloseIdleConnections() {
	if c.trusted != nil {
		c.trusted.CloseIdleConnections()
	}
}

// Bootstrap fetches the cluster's bootstrap data over the verified channel.
func (c *Client) Bootstrap(ctx context.Context) (bootstrap.Data, error) {
	var d bootstrap.Data
	err := c.get(ctx, BootstrapPath, &d)
	return d, err
}

// Members lists the cluster's datastore members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := c.get(ctx, MembersPath, &ms)
	return ms, err
}

// Node asks for a node's credentials over the verified channel.
func (c *Client) Node(ctx context.Context, nr NodeRequest) (NodeCredentials, error) {
	var creds NodeCredentials
	body, err := json.Marshal(nr)
	if err != nil {
		return creds, err
	}
	err = c.do(ctx, http.MethodPost, NodePath, body, &creds)
	return creds, err
}

func (c *Client) get(ctx context.Context, path string, into any) error {
	return c.do(ctx, http.MethodGet, path, nil, into)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, into any) error {
	if c.trusted == nil {
		return errors.New("the server's CA has not been verified")
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.cert == nil {
		req.SetBasicAuth(token.ServerUser, c.Token.Secret)
	}
	resp, err := c.trusted.Do(req)
	// Our check of the server's certificate failed, or the server's TLS
	// alert (after TLS 1.3's handshake) refused ours.
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	if c.cert != nil && (errors.As(err, &verify) || (errors.As(err, &op) && op.Op == "remote error")) {
		return fmt.Errorf("%w: %s %s%s: %v", ErrCertificateRefused, method, c.URL, path, err)
	}
	if errors.As(err, &verify) {
		return fmt.Errorf("the server at %s presents a certificate that does not chain to the CA trusted here (%v): "+
			"it is not a server of this cluster, or the cluster was created anew", c.URL, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %s %s%s: %v", ErrUnavailable, method, c.URL, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		if c.cert != nil {
			return fmt.Errorf("%w by the server at %s: %s", ErrCertificateRefused, c.URL, strings.TrimSpace(string(answer)))
		}
		return fmt.Errorf("the server at %s refused the token (if the cluster's token was rotated, give the new one: "+
			"it is in <data-dir>/server/token on a server)", c.URL)
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrNameTaken, strings.TrimSpace(string(answer)))
	case http.StatusForbidden:
		return fmt.Errorf("the server at %s refused: %s", c.URL, strings.TrimSpace(string(answer)))
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return fmt.Errorf("%w: %s %s%s: %s: %s", ErrUnavailable, method, c.URL, path, resp.Status, strings.TrimSpace(string(answer)))
	default:
		return fmt.Errorf("%s %s%s: %s: %s", method, c.URL, path, resp.Status, strings.TrimSpace(string(answer)))
	}
	if err := json.Unmarshal(answer, into); err != nil {
		return fmt.Errorf("%s %s%s: malformed answer: %w", method, c.URL, path, err)
	}
	return nil
}
