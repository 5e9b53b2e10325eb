package dqlite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/pki"
)

// addressFile records a member's peer address for the CLI on its server.
const addressFile = "address"

// Client reaches a member's RPCs from outside it: the CLI on a server, with
// the server's peer certificate.
type Client struct {
	addr string
	hc   *http.Client
}

// LocalClient is a client of the member whose state is in dir.
func LocalClient(dir string, tlsDir pki.Dir) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, addressFile))
	if err != nil {
		return nil, fmt.Errorf("no Dqlite member address in %s (has the server started once?): %w", dir, err)
	}
	_, clientTLS, err := peerTLS(Config{CAFile: tlsDir.Cert(pki.EtcdPeerCA), CertFile: tlsDir.Cert(PeerCert), KeyFile: tlsDir.Key(PeerCert)})
	if err != nil {
		return nil, err
	}
	return &Client{addr: strings.TrimSpace(string(b)), hc: rpcClient(clientTLS)}, nil
}

// Members implements datastore.Membership: the members as the local one sees them.
func (c *Client) Members(ctx context.Context) ([]datastore.Member, error) {
	var ms []Member
	err := callRPC(ctx, c.hc, c.addr, "GET", "/members", nil, &ms)
	return convertMembers(ms), err
}

// RemoveMember implements datastore.Membership: it removes a member through
// the leader, unless that loses the quorum; it waits up to 15 s for an
// election under way.
func (c *Client) RemoveMember(ctx context.Context, id string) (datastore.Member, error) {
	body, _ := json.Marshal(Member{ID: id})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := untilLeader(ctx, func(ctx context.Context) error { return callRPC(ctx, c.hc, c.addr, "POST", "/remove", body, nil) })
	return datastore.Member{Name: id}, err
}

// Snapshot streams a copy of the member's SQLite state (a voter's only).
func (c *Client) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+c.addr+"/snapshot", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("snapshot of the Dqlite member: %s", bytes.TrimSpace(b))
	}
	return resp.Body, nil
}

// ID is the member's name in the cluster.
func (c *Client) ID(ctx context.Context) (string, error) {
	var st status
	err := callRPC(ctx, c.hc, c.addr, "GET", "/status", nil, &st)
	return st.ID, err
}
