package integration

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/controlplane"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
	"github.com/hakube/hakube/test/harness"
)

// TestNodeCredentials: a node that checked the server's CA against the token
// gets certificates for the keys it keeps (never a CA key), they make it
// system:node:<name> to the Node authorizer and NodeRestriction, and its name
// is its own: another machine (another node password) cannot take it.
func TestNodeCredentials(t *testing.T) {
	s := harness.NewServer(t, "server")
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tok := harness.ReadToken(t, s.Layout().Token())
	client := nodeClient(t, s, tok)

	clientKey, servingKey, proxyKey, networkKey := newKey(t), newKey(t), newKey(t), newKey(t)
	req := join.NodeRequest{Name: "agent-1", IPs: []string{"192.0.2.10"}, Password: "first-machine-password",
		ClientKey: publicPEM(t, clientKey), ServingKey: publicPEM(t, servingKey),
		ProxyKey: publicPEM(t, proxyKey), NetworkKey: publicPEM(t, networkKey)}
	creds, err := client.Node(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	wire, _ := json.Marshal(creds)
	if strings.Contains(string(wire), "PRIVATE KEY") {
		t.Fatal("the node's credentials hold a private key")
	}
	serverCA, _ := os.ReadFile(s.Layout().TLS().Cert(pki.ServerCA))
	if creds.ServerCA != string(serverCA) {
		t.Fatal("the server CA sent to the node is not the cluster's")
	}
	cc := verifyLeaf(t, creds.ClientCert, creds.ClientCA, clientKey, x509.ExtKeyUsageClientAuth)
	if cc.Subject.CommonName != "system:node:agent-1" || len(cc.Subject.Organization) != 1 || cc.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("kubelet client certificate subject %v", cc.Subject)
	}
	if pc := verifyLeaf(t, creds.ProxyCert, creds.ClientCA, proxyKey, x509.ExtKeyUsageClientAuth); pc.Subject.CommonName != "system:kube-proxy" || len(pc.Subject.Organization) != 0 {
		t.Fatalf("kube-proxy client certificate subject %v", pc.Subject)
	}
	if nc := verifyLeaf(t, creds.NetworkCert, creds.ClientCA, networkKey, x509.ExtKeyUsageClientAuth); nc.Subject.CommonName != join.NetworkUser || len(nc.Subject.Organization) != 0 {
		t.Fatalf("network client certificate subject %v", nc.Subject)
	}
	if creds.Cluster.ClusterCIDR != "10.42.0.0/16" || creds.Cluster.ClusterDNS != "10.43.0.10" || creds.Cluster.ClusterDomain != "cluster.local" {
		t.Fatalf("the node was told the cluster is %+v", creds.Cluster)
	}
	sc := verifyLeaf(t, creds.ServingCert, creds.ServerCA, servingKey, x509.ExtKeyUsageServerAuth)
	if len(sc.IPAddresses) != 1 || sc.IPAddresses[0].String() != "192.0.2.10" || len(sc.DNSNames) != 1 || sc.DNSNames[0] != "agent-1" {
		t.Fatalf("kubelet serving certificate names %v %v", sc.DNSNames, sc.IPAddresses)
	}

	// Through the supervisor the node is system:node:agent-1: it registers its
	// own Node, but not another's, and reads no Secrets.
	cs := nodeClientset(t, s, creds, clientKey)
	own := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "agent-1"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the node cannot register itself: %v", err)
	}
	if own, err = cs.CoreV1().Nodes().Get(ctx, "agent-1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "agent-2"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, other, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent-1 registering agent-2: want forbidden, got %v", err)
	}
	if _, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a node listing secrets: want forbidden, got %v", err)
	}

	// The same machine again (a restart) gets new certificates; another
	// machine claiming the name is refused, and says how to fix it.
	if _, err := client.Node(ctx, req); err != nil {
		t.Fatalf("the same node asking again: %v", err)
	}
	thief := req
	thief.Password = "another-machine-password"
	if _, err := client.Node(ctx, thief); !errors.Is(err, join.ErrNameTaken) || !strings.Contains(err.Error(), "--node-name") {
		t.Fatalf("another machine claiming agent-1: want the name refused, got %v", err)
	}
	// What a node's serving certificate (from the server CA) must not name,
	// weak or foreign keys, and a name another way registered are refused.
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// agent-1 holds 192.0.2.10; the server its advertised address.
	own.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}
	if _, err := s.Client().CoreV1().Nodes().UpdateStatus(ctx, own, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var serverIP string
	waitForServerIP := time.Now().Add(time.Minute)
	for serverIP == "" && time.Now().Before(waitForServerIP) {
		eps, err := s.Client().DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		if err == nil && len(eps.Items) > 0 && len(eps.Items[0].Endpoints) > 0 {
			serverIP = eps.Items[0].Endpoints[0].Addresses[0]
		}
		time.Sleep(200 * time.Millisecond)
	}
	for what, change := range map[string]func(*join.NodeRequest){
		"is node agent-1's address":          func(r *join.NodeRequest) { r.IPs = []string{"192.0.2.10"} },
		"is a server's address":              func(r *join.NodeRequest) { r.IPs = []string{serverIP} },
		"client key":                         func(r *join.NodeRequest) { r.ClientKey = "not a key" },
		"RSA of 2048 bits or more":           func(r *join.NodeRequest) { r.ServingKey = publicPEM(t, weak) },
		"the cluster's API is reached":       func(r *join.NodeRequest) { r.Name = "kubernetes.default.svc.cluster.local" },
		"in the Service range":               func(r *join.NodeRequest) { r.IPs = []string{"10.43.0.1"} },
		"loopback":                           func(r *join.NodeRequest) { r.IPs = []string{"127.0.0.1"} },
		"registered without a node password": func(r *join.NodeRequest) { r.Name = "legacy" },
	} {
		bad := req
		bad.Name = "agent-3"
		change(&bad)
		if _, err := client.Node(ctx, bad); err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("a request with %s: want refused saying so, got %v", what, err)
		}
	}

	// The wrong secret is refused before anything is issued.
	wrong := tok
	wrong.Secret = "not-the-secret"
	if _, err := nodeClient(t, s, wrong).Node(ctx, req); err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Fatalf("a wrong token: want refused, got %v", err)
	}

	rotatedNodeCredentials(t, s, tok, req, creds, clientKey)
}

// rotatedNodeCredentials: after 'hakube token rotate' on a single SQLite
// server, the old token is refused and the new one works; a node that
// joined asks again with its kubelet client certificate and no token, for
// its own name only, while its registration exists; a client certificate
// that is not a node's is no token.
func rotatedNodeCredentials(t *testing.T, s *harness.Server, old token.Token, req join.NodeRequest, creds join.NodeCredentials, key crypto.Signer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, code := s.Hakube("token", "rotate", "--new-token", "integration-rotated-secret")
	if code != 0 || !strings.Contains(out, "servers that took the new token: ") || strings.Contains(out, "new token: none") {
		t.Fatalf("token rotate: exit %d\n%s", code, out)
	}
	if _, err := nodeClient(t, s, old).Node(ctx, req); err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Fatalf("the old token after the rotation: want refused, got %v", err)
	}
	rotated := harness.ReadToken(t, s.Layout().Token())
	if rotated.Secret != "integration-rotated-secret" || rotated.CAHash != old.CAHash {
		t.Fatalf("the token file after the rotation: %s", rotated)
	}
	if _, err := nodeClient(t, s, rotated).Node(ctx, req); err != nil {
		t.Fatalf("the new token: %v", err)
	}

	certClient := func(cert *x509.Certificate, key crypto.Signer) *join.Client {
		cl, err := join.NewNodeClient(s.URL(), []byte(creds.ServerCA), tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	nodeCert, err := pki.ParseCert([]byte(creds.ClientCert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certClient(nodeCert, key).Node(ctx, req); err != nil {
		t.Fatalf("the node with its certificate: %v", err)
	}
	other := req
	other.Name = "agent-4"
	if _, err := certClient(nodeCert, key).Node(ctx, other); err == nil || !strings.Contains(err.Error(), "renews its own credentials only") {
		t.Fatalf("agent-1's certificate asking for agent-4: want refused, got %v", err)
	}
	admin := harness.ReadCert(t, s.Layout().TLS().Cert(controlplane.AdminCert))
	adminKey := harness.ReadKey(t, s.Layout().TLS().Key(controlplane.AdminCert))
	if _, err := certClient(admin, adminKey).Node(ctx, req); !errors.Is(err, join.ErrCertificateRefused) {
		t.Fatalf("the admin certificate asking for node credentials: want refused, got %v", err)
	}
	// Deleted (its Node and its registration), the node's certificate gets
	// it nothing: it joins again with the token.
	if err := s.Client().CoreV1().Nodes().Delete(ctx, req.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Client().CoreV1().Secrets("kube-system").Delete(ctx, req.Name+".node-password.hakube", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := certClient(nodeCert, key).Node(ctx, req); !errors.Is(err, join.ErrCertificateRefused) || !strings.Contains(err.Error(), "registration was deleted") {
		t.Fatalf("the certificate of a node whose registration was deleted: want refused, got %v", err)
	}
	if _, err := nodeClient(t, s, rotated).Node(ctx, req); err != nil {
		t.Fatalf("the node joining again with the token: %v", err)
	}
}

func nodeClient(t *testing.T, s *harness.Server, tok token.Token) *join.Client {
	t.Helper()
	c, err := join.NewClient(s.URL(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyCA(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicPEM(t *testing.T, k crypto.Signer) string {
	t.Helper()
	b, err := pki.EncodePublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// verifyLeaf checks that certPEM certifies key for usage and chains to caPEM.
func verifyLeaf(t *testing.T, certPEM, caPEM string, key crypto.Signer, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCert([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.Pool([]byte(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("certificate %s: %v", c.Subject, err)
	}
	if pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		t.Fatalf("certificate %s is not for the key the node sent", c.Subject)
	}
	return c
}

func nodeClientset(t *testing.T, s *harness.Server, creds join.NodeCredentials, key crypto.Signer) kubernetes.Interface {
	t.Helper()
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: s.URL(), TLSClientConfig: rest.TLSClientConfig{
		CAData: []byte(creds.ServerCA), CertData: []byte(creds.ClientCert), KeyData: keyPEM}})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestAgentToken: with --agent-token, the agent token (in server/agent-token,
// pinned to the CA) gets a node its credentials, in its full form or as the
// secret alone (the server proves it knows it), and is refused the bootstrap
// data and the member list, which the server token still gets. The cluster
// keeps its agent token: a restart with another is refused.
func TestAgentToken(t *testing.T) {
	s := harness.NewServer(t, "server")
	s.Args = append(s.Args, "--agent-token", "agent-secret-1")
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := harness.ReadToken(t, s.Layout().AgentToken())
	serverCA, _ := os.ReadFile(s.Layout().TLS().Cert(pki.ServerCA))
	if full.User != token.NodeUser || full.Secret != "agent-secret-1" || full.CAHash != token.HashCA(serverCA) {
		t.Fatalf("agent token file: %s", full)
	}
	for i, tok := range []token.Token{full, {Secret: "agent-secret-1"}} {
		c := nodeClient(t, s, tok)
		key := newKey(t)
		req := join.NodeRequest{Name: fmt.Sprintf("agent-%d", i), IPs: []string{"192.0.2.20"}, Password: "agent-machine-password",
			ClientKey: publicPEM(t, key), ServingKey: publicPEM(t, newKey(t)), ProxyKey: publicPEM(t, newKey(t)), NetworkKey: publicPEM(t, newKey(t))}
		if _, err := c.Node(ctx, req); err != nil {
			t.Fatalf("%s: node credentials with the agent token: %v", tok, err)
		}
		if _, err := c.Bootstrap(ctx); err == nil || !strings.Contains(err.Error(), "refused the token") {
			t.Fatalf("%s: bootstrap data with the agent token: want refused, got %v", tok, err)
		}
		if _, err := c.Members(ctx); err == nil || !strings.Contains(err.Error(), "refused the token") {
			t.Fatalf("%s: members with the agent token: want refused, got %v", tok, err)
		}
	}
	if d, err := nodeClient(t, s, harness.ReadToken(t, s.Layout().Token())).Bootstrap(ctx); err != nil || d.AgentSecret != "agent-secret-1" {
		t.Fatalf("bootstrap data with the server token: %v", err)
	}

	s.Stop()
	out, code := s.RunToExit("--agent-token", "agent-secret-2")
	if code == 0 || !strings.Contains(out, "--agent-token differs from the cluster's agent token") {
		t.Fatalf("a restart with another agent token: exit %d\n%s", code, out)
	}
}

// TestNodeAfterClusterRecreated: a node keeps its data dir while its
// cluster is recreated (new CAs); started with the new cluster's token, it
// finds that its certificate does not get it through, and joins again with
// the token, which checks the new CA.
func TestNodeAfterClusterRecreated(t *testing.T) {
	l := layout.New(t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodeJoins := func(s *harness.Server) error {
		c := credentials.New(credentials.Config{Server: s.URL(), Token: harness.ReadToken(t, s.Layout().Token()), Name: "agent-r",
			IPs: []net.IP{net.ParseIP("192.0.2.20")}, Layout: l, APIServer: s.URL(), FirstJoinTimeout: 30 * time.Second})
		if err := c.Init(ctx); err != nil {
			return err
		}
		err := c.Start(ctx)
		if stopErr := c.Stop(); err == nil {
			err = stopErr
		}
		return err
	}
	first := harness.NewServer(t, "first")
	first.Start()
	if err := nodeJoins(first); err != nil {
		t.Fatal(err)
	}
	first.Stop()
	second := harness.NewServer(t, "second")
	second.Start()
	if err := nodeJoins(second); err != nil {
		t.Fatalf("the node, with the new cluster's token: %v", err)
	}
	got := harness.ReadCert(t, l.AgentTLS().Cert(pki.ServerCA))
	if want := harness.ReadCert(t, second.Layout().TLS().Cert(pki.ServerCA)); !got.Equal(want) {
		t.Fatalf("the node trusts %s, not the new cluster's CA %s", got.Subject, want.Subject)
	}
}
