package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/pki"
)

// nodePasswordSuffix names the Secret in kube-system that binds a node name
// to the password of the machine that registered it first, as K3s does.
const nodePasswordSuffix = ".node-password.hakube"

// A node password is random (the node makes it), so a fast hash is enough:
// the iterations only keep a leaked Secret from being a password list.
const nodePasswordIterations = 10_000

// maxNodeIPs bounds the addresses a node's serving certificate names.
const maxNodeIPs = 8

// nodeIssuer issues the credentials of nodes that join through this server:
// certificates for keys the node keeps, once the name is proved its own.
type nodeIssuer struct {
	tls pki.Dir
	// kubeconfig reaches this server's apiserver, for the password Secrets.
	kubeconfig string
	// A node's serving certificate comes from the server CA, so it must not
	// name what the API is reached by: the cluster domain's names, the
	// Service range, loopback.
	clusterDomain string
	serviceNet    *net.IPNet
	// cluster is what every node is told of the cluster.
	cluster join.NodeCluster
	// sans are the servers' extra certificate names (--tls-san), which no
	// node's certificate may name; self and selfIP are this server's own
	// node, the one node that may name this server's address.
	sans   []string
	self   string
	selfIP net.IP

	mu     sync.Mutex
	client kubernetes.Interface
}

func (n *nodeIssuer) issue(ctx context.Context, req join.NodeRequest, renewal bool) (join.NodeCredentials, error) {
	if err := n.checkName(req.Name); err != nil {
		return join.NodeCredentials{}, err
	}
	ips, err := n.checkIPs(req.IPs)
	if err != nil {
		return join.NodeCredentials{}, err
	}
	if len(req.Password) < 16 || len(req.Password) > 256 {
		return join.NodeCredentials{}, join.BadRequest("the node password must be 16 to 256 characters")
	}
	clientPub, err := parseNodeKey(req.ClientKey)
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("client key: %v", err)
	}
	servingPub, err := parseNodeKey(req.ServingKey)
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("serving key: %v", err)
	}
	proxyPub, err := parseNodeKey(req.ProxyKey)
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("kube-proxy key: %v", err)
	}
	networkPub, err := parseNodeKey(req.NetworkKey)
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("network key: %v", err)
	}
	if err := n.claim(ctx, req.Name, req.Password, renewal); err != nil {
		return join.NodeCredentials{}, err
	}
	if err := n.checkTaken(ctx, req.Name, ips); err != nil {
		return join.NodeCredentials{}, err
	}
	var creds join.NodeCredentials
	clientCA, err := n.tls.LoadCA(pki.ClientCA)
	if err != nil {
		return creds, err
	}
	serverCA, err := n.tls.LoadCA(pki.ServerCA)
	if err != nil {
		return creds, err
	}
	client, err := clientCA.Sign(pki.Leaf{CommonName: join.NodeUserPrefix + req.Name, Organization: []string{join.NodesGroup}, Usage: pki.ClientAuth}, clientPub)
	if err != nil {
		return creds, err
	}
	serving, err := serverCA.Sign(pki.Leaf{CommonName: req.Name, DNSNames: []string{req.Name}, IPs: ips, Usage: pki.ServerAuth}, servingPub)
	if err != nil {
		return creds, err
	}
	proxy, err := clientCA.Sign(pki.Leaf{CommonName: "system:kube-proxy", Usage: pki.ClientAuth}, proxyPub)
	if err != nil {
		return creds, err
	}
	network, err := clientCA.Sign(pki.Leaf{CommonName: join.NetworkUser, Usage: pki.ClientAuth}, networkPub)
	if err != nil {
		return creds, err
	}
	creds.ClientCert, creds.ServingCert = string(client), string(serving)
	creds.ProxyCert, creds.NetworkCert = string(proxy), string(network)
	creds.Cluster = n.cluster
	creds.ServerCA, creds.ClientCA = string(serverCA.CertPEM), string(clientCA.CertPEM)
	return creds, nil
}

func (n *nodeIssuer) checkName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return join.BadRequest("node name %q cannot be used: %s", name, strings.Join(msgs, "; "))
	}
	if max := validation.DNS1123SubdomainMaxLength - len(nodePasswordSuffix); len(name) > max {
		return join.BadRequest("node name %q is longer than %d characters", name, max)
	}
	if name == "localhost" || name == "kubernetes" || strings.HasPrefix(name, "kubernetes.") || strings.HasSuffix(name, ".svc") ||
		strings.Contains(name, ".svc.") || name == n.clusterDomain || strings.HasSuffix(name, "."+n.clusterDomain) {
		return join.BadRequest("node name %q is a name the cluster's API is reached by; choose another --node-name", name)
	}
	return nil
}

func (n *nodeIssuer) checkIPs(given []string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range given {
		ip := net.ParseIP(s)
		switch {
		case ip == nil:
			return nil, join.BadRequest("node address %q is not an IP address", s)
		case ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast():
			return nil, join.BadRequest("node address %s cannot be a node's: it is loopback, unspecified, multicast or link-local", s)
		case n.serviceNet != nil && n.serviceNet.Contains(ip):
			return nil, join.BadRequest("node address %s is in the Service range %s", s, n.serviceNet)
		}
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 || len(ips) > maxNodeIPs {
		return nil, join.BadRequest("a node sends 1 to %d addresses, not %d", maxNodeIPs, len(ips))
	}
	return ips, nil
}

// checkTaken refuses a serving certificate for what belongs to others: a
// --tls-san of the servers, a server's address (the kubernetes Service's
// endpoints), another node's address.
func (n *nodeIssuer) checkTaken(ctx context.Context, name string, ips []net.IP) error {
	for _, san := range n.sans {
		if san == name || slices.ContainsFunc(ips, net.ParseIP(san).Equal) {
			return join.BadRequest("node %s: %s is a name the servers' certificate carries (--tls-san); choose another --node-name or --node-ip", name, san)
		}
	}
	cs, err := n.kube()
	if err != nil {
		return err
	}
	eps, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		return err
	}
	for _, sl := range eps.Items {
		for _, ep := range sl.Endpoints {
			for _, a := range ep.Addresses {
				ip := net.ParseIP(a)
				if ip == nil || !containsIP(ips, ip) || (name == n.self && ip.Equal(n.selfIP)) {
					continue
				}
				return join.BadRequest("node %s: %s is a server's address; a node on a server joins through that server", name, a)
			}
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, node := range nodes.Items {
		if node.Name == name {
			continue
		}
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && containsIP(ips, net.ParseIP(a.Address)) {
				return join.BadRequest("node %s: %s is node %s's address; give each node its own --node-ip", name, a.Address, node.Name)
			}
		}
	}
	return nil
}

func containsIP(ips []net.IP, ip net.IP) bool { return ip != nil && slices.ContainsFunc(ips, ip.Equal) }

// parseNodeKey accepts the keys a node makes: ECDSA P-256 or P-384, or RSA
// of 2048 bits or more.
func parseNodeKey(data string) (crypto.PublicKey, error) {
	pub, err := pki.ParsePublicKey([]byte(data))
	if err != nil {
		return nil, err
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return pub, nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return pub, nil
		}
	}
	return nil, errors.New("use an ECDSA P-256 or P-384 key, or RSA of 2048 bits or more")
}

// kube is a client of this server's apiserver, made on first use (the
// kubeconfig is written once the cluster's CAs are in place).
func (n *nodeIssuer) kube() (kubernetes.Interface, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.client != nil {
		return n.client, nil
	}
	var err error
	if n.client, err = kubeconfig.Client(n.kubeconfig); err != nil {
		return nil, err
	}
	return n.client, nil
}

// claim binds name to password in a Secret, or checks the binding that is
// there: the first machine to register a name owns it. A Node registered
// without a binding (by other means) is not given away either. A renewal
// (asked with the node's certificate) needs the binding: deleting it makes
// the node join with the token again.
func (n *nodeIssuer) claim(ctx context.Context, name, password string, renewal bool) error {
	cs, err := n.kube()
	if err != nil {
		return err
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	secretName := name + nodePasswordSuffix
	for {
		s, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
		if err == nil {
			salt, _ := hex.DecodeString(string(s.Data["salt"]))
			if subtle.ConstantTimeCompare([]byte(hashNodePassword(password, salt)), s.Data["hash"]) != 1 {
				return fmt.Errorf("%w: a node named %s was registered by another machine (its password differs). "+
					"Give this node another name (--node-name), or if it replaces that machine, delete the node first: "+
					"kubectl delete node %s && kubectl -n kube-system delete secret %s", join.ErrNameTaken, name, name, secretName)
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		if renewal {
			return join.ErrUnregistered
		}
		if _, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("%w: a node named %s exists, registered without a node password; give this node another name "+
				"(--node-name), or if it replaces that machine, delete the node first: kubectl delete node %s", join.ErrNameTaken, name, name)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secretName},
			Data:       map[string][]byte{"hash": []byte(hashNodePassword(password, salt)), "salt": []byte(hex.EncodeToString(salt))},
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// Another request for the name got there first: check against its binding.
	}
}

func hashNodePassword(password string, salt []byte) string {
	key, _ := pbkdf2.Key(sha256.New, password, salt, nodePasswordIterations, 32)
	return hex.EncodeToString(key)
}
