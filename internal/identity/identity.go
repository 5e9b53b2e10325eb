// Package identity is what names a node to the cluster: its name, its IP
// address, its data directory and the token it joined with. A server and an
// agent resolve it the same way.
package identity

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/token"
)

// Identity is one node's.
type Identity struct {
	Name string
	// IP is the node's address; AdvertiseIP the one the cluster reaches it at.
	IP, AdvertiseIP net.IP
	Layout          layout.Layout
	Token           token.Token
}

// Resolve fills in what was not given: the name from the hostname, the IP
// from the default-route interface, the advertised IP from the IP. The
// values given must be valid already (the config's Validate checks them).
func Resolve(name, ip, advertise string, l layout.Layout, tok token.Token) (Identity, error) {
	id := Identity{Name: name, Layout: l, Token: tok}
	if id.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return Identity{}, fmt.Errorf("cannot read the hostname (%v); pass --node-name", err)
		}
		id.Name = strings.ToLower(h)
	}
	var err error
	if id.IP, err = resolveNodeIP(ip); err != nil {
		return Identity{}, err
	}
	id.AdvertiseIP = id.IP
	if advertise != "" {
		id.AdvertiseIP = net.ParseIP(advertise)
	}
	return id, nil
}
