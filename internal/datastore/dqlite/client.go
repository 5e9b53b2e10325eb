package dqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

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

// LocalClient is a client of the member whose state is in dbDir/dqlite.
func LocalClient(dbDir string, tlsDir pki.Dir) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(Dir(dbDir), addressFile))
	if err != nil {
		return nil, fmt.Errorf("no Dqlite member address in %s (has the server started once?): %w", Dir(dbDir), err)
	}
	_, clientTLS, err := peerTLS(Config{CAFile: tlsDir.Cert(pki.EtcdPeerCA), CertFile: tlsDir.Cert(PeerCert), KeyFile: tlsDir.Key(PeerCert)})
	if err != nil {
		return nil, err
	}
	return &Client{addr: strings.TrimSpace(string(b)), hc: rpcClient(clientTLS)}, nil
}

// Members lists the members as the local one sees them.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := callRPC(ctx, c.hc, c.addr, "GET", "/members", nil, &ms)
	return ms, err
}

// Remove removes a member through the leader, unless that loses the quorum.
func (c *Client) Remove(ctx context.Context, id string) error {
	body, _ := json.Marshal(Member{ID: id})
	return callRPC(ctx, c.hc, c.addr, "POST", "/remove", body, nil)
}
