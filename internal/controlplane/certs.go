package controlplane

import (
	"net"

	"github.com/hakube/hakube/internal/pki"
)

// Leaf certificate names in the TLS directory.
const (
	ServingCert    = "serving-kube-apiserver"
	AdminCert      = "client-admin"
	ControllerCert = "client-controller"
	SchedulerCert  = "client-scheduler"
	KubeletClient  = "client-kube-apiserver"
	AuthProxyCert  = "client-auth-proxy"
	// AuthProxyUser is the name the apiserver trusts to assert users via request headers.
	AuthProxyUser = "system:auth-proxy"
)

// CertsConfig says what this server's certificates must cover.
type CertsConfig struct {
	TLSDir        pki.Dir
	NodeName      string
	NodeIP        net.IP
	AdvertiseIP   net.IP
	ServiceIP     net.IP // first address of the service CIDR: the "kubernetes" service
	ClusterDomain string
	// SANs are extra names or IP addresses (--tls-san).
	SANs []string
}

// MintLeaves (re)issues every leaf certificate this server uses. Leaves are
// minted on each start, so a changed --tls-san or node IP takes effect at once.
func MintLeaves(c CertsConfig) error {
	serverCA, err := c.TLSDir.LoadCA(pki.ServerCA)
	if err != nil {
		return err
	}
	clientCA, err := c.TLSDir.LoadCA(pki.ClientCA)
	if err != nil {
		return err
	}
	rhCA, err := c.TLSDir.LoadCA(pki.RequestHeaderCA)
	if err != nil {
		return err
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + c.ClusterDomain}
	if c.NodeName != "" {
		dns = append(dns, c.NodeName)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range []net.IP{c.NodeIP, c.AdvertiseIP, c.ServiceIP} {
		if ip != nil {
			ips = append(ips, ip)
		}
	}
	for _, san := range c.SANs {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, san)
		}
	}
	leaves := []struct {
		ca   *pki.CA
		name string
		leaf pki.Leaf
	}{
		{serverCA, ServingCert, pki.Leaf{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth}},
		{clientCA, AdminCert, pki.Leaf{CommonName: "system:admin", Organization: []string{"system:masters"}, Usage: pki.ClientAuth}},
		{clientCA, ControllerCert, pki.Leaf{CommonName: "system:kube-controller-manager", Usage: pki.ClientAuth}},
		{clientCA, SchedulerCert, pki.Leaf{CommonName: "system:kube-scheduler", Usage: pki.ClientAuth}},
		{clientCA, KubeletClient, pki.Leaf{CommonName: "system:apiserver", Organization: []string{"system:masters"}, Usage: pki.ClientAuth}},
		{rhCA, AuthProxyCert, pki.Leaf{CommonName: AuthProxyUser, Usage: pki.ClientAuth}},
	}
	for _, l := range leaves {
		if err := l.ca.IssueFiles(l.leaf, c.TLSDir.Cert(l.name), c.TLSDir.Key(l.name)); err != nil {
			return err
		}
	}
	return nil
}
