// Package credentials gets a node its identity from a server: it checks the
// server's CA against the token before it trusts it or sends anything, then
// sends public keys only and receives certificates (the kubelet's client and
// serving certificates, kube-proxy's and the pod network's). The keys and the
// node password never leave the node. Once it holds a valid kubelet client
// certificate, a node asks with it instead of the token (see package join).
package credentials

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/runner"
	"github.com/hakube/hakube/internal/token"
)

// Certificate names in the agent's TLS directory.
const (
	KubeletClient  = "client-kubelet"
	KubeletServing = "serving-kubelet"
	ProxyClient    = "client-kube-proxy"
	NetworkClient  = "client-flannel"
)

// Kubeconfig names of the node daemons (layout.AgentKubeconfig).
const (
	Kubelet = "kubelet"
	Proxy   = "kube-proxy"
	Network = "flannel"
)

// Config is one node's request.
type Config struct {
	// Server is the supervisor to join through (https://<server>:6443).
	Server string
	Token  token.Token
	Name   string
	IPs    []net.IP
	Layout layout.Layout
	// APIServer is what the daemons' kubeconfigs name: the client-side load
	// balancer on an agent, the local supervisor on a server.
	APIServer string
	// FirstJoinTimeout bounds the wait for a server on a node's first join,
	// when a wrong --server is the likely cause (default 2 minutes). A node
	// that joined before waits as long as it takes: after a power cut its
	// servers may come back after it.
	FirstJoinTimeout time.Duration
}

// DefaultFirstJoinTimeout is Config.FirstJoinTimeout's default.
const DefaultFirstJoinTimeout = 2 * time.Minute

// Credentials is the component that fetches them, and renews them while
// the node runs.
type Credentials struct {
	cfg     Config
	cluster join.NodeCluster
	req     join.NodeRequest
	// trust is the pki.NodeTrust of the CAs this process's daemons run with.
	trust string
	// kube reaches the API as the kubelet, for the node's own Node.
	kube kubernetes.Interface
	// restart yields runner.ErrRestart when the CAs change (a rotation).
	restart chan error

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns the component.
func New(cfg Config) *Credentials { return &Credentials{cfg: cfg, restart: make(chan error, 1)} }

// Failed yields runner.ErrRestart when the node restarts in place to trust
// the cluster's rotated CAs.
func (c *Credentials) Failed() <-chan error { return c.restart }

func (c *Credentials) Name() string { return "node credentials" }

func (c *Credentials) Init(context.Context) error {
	_, err := join.NewClient(c.cfg.Server, c.cfg.Token)
	return err
}

// Start waits for the server (it may be starting too), then fetches and
// writes the node's credentials, and starts renewing them.
func (c *Credentials) Start(ctx context.Context) error {
	lt, err := pki.LeafLifetimes()
	if err != nil {
		return err
	}
	tlsDir := c.cfg.Layout.AgentTLS()
	w := c.newWait()
	until := func(err error) (error, bool) {
		stop := w.done(ctx, err)
		return w.err, stop
	}
	// A node that has no valid certificate checks the CA against the token
	// before it writes anything.
	var verified *join.Client
	if cl, err := c.certClient(c.cfg.Server); err != nil {
		return err
	} else if cl == nil {
		if verified, err = c.tokenClient(ctx, c.cfg.Server, until); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(string(tlsDir), 0o700); err != nil {
		return err
	}
	password, err := c.password()
	if err != nil {
		return err
	}
	c.req = join.NodeRequest{Name: c.cfg.Name, Password: password}
	for _, ip := range c.cfg.IPs {
		c.req.IPs = append(c.req.IPs, ip.String())
	}
	for name, into := range map[string]*string{
		KubeletClient: &c.req.ClientKey, KubeletServing: &c.req.ServingKey, ProxyClient: &c.req.ProxyKey, NetworkClient: &c.req.NetworkKey,
	} {
		if *into, err = publicKey(tlsDir.Key(name)); err != nil {
			return err
		}
	}
	creds, err := c.ask(ctx, c.cfg.Server, verified, until)
	if errors.Is(err, join.ErrNameTaken) {
		return fmt.Errorf("%w (this machine's password is %s: a machine that was reinstalled must be deleted first with 'kubectl delete node %s' "+
			"and 'kubectl -n kube-system delete secret %s.node-password.hakube')", err, c.cfg.Layout.NodePassword(), c.cfg.Name, c.cfg.Name)
	}
	if err != nil {
		return err
	}
	if err := c.write(creds); err != nil {
		return err
	}
	c.trust = pki.NodeTrust([]byte(creds.ServerCA), []byte(creds.ClientCA))
	if err := c.dropStaleKubeletCert(creds.ClientCA); err != nil {
		return err
	}
	for daemon, cert := range map[string]string{Kubelet: KubeletClient, Proxy: ProxyClient, Network: NetworkClient} {
		if err := kubeconfig.Write(c.cfg.Layout.AgentKubeconfig(daemon), kubeconfig.Config{
			Server: c.cfg.APIServer, CAFile: tlsDir.Cert(pki.ServerCA), CertFile: tlsDir.Cert(cert), KeyFile: tlsDir.Key(cert),
		}, 0o600); err != nil {
			return err
		}
	}
	if c.kube, err = kubeconfig.Client(c.cfg.Layout.AgentKubeconfig(Kubelet)); err != nil {
		return err
	}
	c.cluster = creds.Cluster
	klog.Infof("node: certificates received for node %s", c.cfg.Name)
	// A start renews everything: a request made before it is answered.
	_ = os.Remove(c.cfg.Layout.RenewRequest())
	// The renewals outlive Start's context: they end with Stop.
	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.renewLoop(rctx, lt)
	}()
	return nil
}

// write writes the certificates the server sent; the keys stay as they are.
func (c *Credentials) write(creds join.NodeCredentials) error {
	tlsDir := c.cfg.Layout.AgentTLS()
	files := map[string]string{
		tlsDir.Cert(pki.ServerCA): creds.ServerCA, tlsDir.Cert(pki.ClientCA): creds.ClientCA,
		tlsDir.Cert(KubeletClient): creds.ClientCert, tlsDir.Cert(KubeletServing): creds.ServingCert,
		tlsDir.Cert(ProxyClient): creds.ProxyCert, tlsDir.Cert(NetworkClient): creds.NetworkCert,
	}
	for path, pem := range files {
		if pem == "" {
			return fmt.Errorf("the server at %s sent no %s: is it an older hakube? upgrade the servers first", c.cfg.Server, path)
		}
		if err := fsutil.WriteFile(path, []byte(pem), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// renewEvery is how often a running node looks at its certificates and for
// a request to renew them ('hakube certificate rotate' waits for it): a
// stat and four small files.
const renewEvery = 5 * time.Second

// renewLoop asks a server for new certificates (for the same keys) when one
// is due or a renewal was requested. It asks through APIServer, the load
// balancer that reaches whichever server is up, not the server it joined
// through, which may be gone. The daemons read the files again: the kubelet
// watches its serving certificate, client-go reads client certificates at
// each handshake.
func (c *Credentials) renewLoop(ctx context.Context, lt pki.Lifetimes) {
	t := time.NewTicker(min(renewEvery, lt.CheckEvery))
	defer t.Stop()
	var failed, trustChecked time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(trustChecked) >= trustEvery {
			if err := c.followCAs(ctx); err != nil && ctx.Err() == nil {
				klog.Warningf("node: following the cluster's CAs: %v", err)
			}
			trustChecked = time.Now()
		}
		why := c.renewalDue(lt)
		if why == "" {
			continue
		}
		err := c.renew(ctx)
		switch {
		case err == nil:
			klog.Infof("node: renewed the certificates of node %s (%s)", c.cfg.Name, why)
			failed = time.Time{}
		case ctx.Err() != nil:
			return
		case time.Since(failed) > time.Minute:
			klog.Errorf("node: renewing the certificates (%s): %v; retrying", why, err)
			failed = time.Now()
		}
	}
}

// Annotations of a node's own Node object for 'hakube certificate
// rotate-ca': TrustAnnotation is the pki.NodeTrust of the CAs the node's
// daemons run with (the node writes it), WantedTrustAnnotation the
// cluster's once every server runs with them (the command writes it).
const (
	TrustAnnotation       = "hakube.io/ca-trust"
	WantedTrustAnnotation = "hakube.io/ca-trust-wanted"
)

// Annotate sets one annotation of the Node called name.
func Annotate(ctx context.Context, cs kubernetes.Interface, name, key, value string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// trustEvery is how often a node reads its Node object for a CA rotation:
// a GET.
const trustEvery = 10 * time.Second

// followCAs says which CAs this node runs with, on its Node object, and
// when a rotation wants others: it gets certificates of the new CAs and
// their bundles, and restarts in place, as what holds a CA (client-go's
// kubeconfigs) reads it once.
func (c *Credentials) followCAs(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	node, err := c.kube.CoreV1().Nodes().Get(ctx, c.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // the kubelet registers it
	} else if err != nil {
		return err
	}
	if node.Annotations[TrustAnnotation] != c.trust {
		if err := Annotate(ctx, c.kube, c.cfg.Name, TrustAnnotation, c.trust); err != nil {
			return err
		}
	}
	wanted := node.Annotations[WantedTrustAnnotation]
	if wanted == "" || wanted == c.trust {
		return nil
	}
	creds, err := c.ask(ctx, c.cfg.APIServer, nil, func(err error) (error, bool) { return err, true })
	if err != nil {
		return err
	}
	if got := pki.NodeTrust([]byte(creds.ServerCA), []byte(creds.ClientCA)); got != wanted {
		return fmt.Errorf("a CA rotation wants CAs %s, and the server answered with %s: retrying", wanted, got)
	}
	if err := c.write(creds); err != nil {
		return err
	}
	klog.Infof("node: the cluster's CAs were rotated: restarting in place to trust the new ones (%s)", wanted)
	select {
	case c.restart <- fmt.Errorf("%w: to trust the cluster's rotated CAs", runner.ErrRestart):
	default:
	}
	return nil
}

// dropStaleKubeletCert removes the kubelet's client certificate from the
// CSR API (--cert-dir) when the client CA did not sign it, so the kubelet
// starts with the one just issued (its kubeconfig's), which a CA rotation
// made: servers that trust the new CA alone refuse the other.
func (c *Credentials) dropStaleKubeletCert(clientCA string) error {
	current := filepath.Join(c.cfg.Layout.KubeletCerts(), "kubelet-client-current.pem")
	b, err := os.ReadFile(current)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	ca, err := pki.ParseCert([]byte(clientCA))
	if err != nil {
		return err
	}
	if cert, err := pki.ParseCert(b); err == nil && cert.CheckSignatureFrom(ca) == nil {
		return nil
	}
	klog.Infof("node: %s is not signed by the cluster's client CA (rotated): the kubelet starts with the certificate just issued", current)
	return os.Remove(current)
}

// renewalDue says why the node's certificates must be renewed now, or "".
func (c *Credentials) renewalDue(lt pki.Lifetimes) string {
	if fsutil.Exists(c.cfg.Layout.RenewRequest()) {
		return "requested"
	}
	certs, err := pki.Check(time.Now(), lt.Window, c.cfg.Layout.AgentTLS())
	if err != nil {
		return "unreadable: " + err.Error()
	}
	for _, s := range certs {
		if !s.CA && s.RenewalDue(lt.Window) {
			return s.Name + " expires " + s.NotAfter.Format(time.RFC3339)
		}
	}
	return ""
}

func (c *Credentials) renew(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	creds, err := c.ask(rctx, c.cfg.APIServer, nil, func(err error) (error, bool) { return err, true })
	if err != nil {
		return err
	}
	if err := c.write(creds); err != nil {
		return err
	}
	if err := os.Remove(c.cfg.Layout.RenewRequest()); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// ask gets the node's credentials from the server at url: through
// verified, a client that checked the server's CA against the token, when
// given; else with the node's certificate when it holds a valid one; else,
// or when the certificate is refused, with the token, once the server's CA
// is checked against it. until is given the outcome of each attempt and
// says whether to stop, and with what error (Start waits for a server that
// is down).
func (c *Credentials) ask(ctx context.Context, url string, verified *join.Client, until func(error) (error, bool)) (join.NodeCredentials, error) {
	var creds join.NodeCredentials
	if verified == nil {
		cl, err := c.certClient(url)
		if err != nil {
			return creds, err
		}
		if cl != nil {
			klog.Infof("node: asking %s with the node's certificate", url)
			defer cl.CloseIdleConnections()
			err := retry(until, func() (err error) { creds, err = cl.Node(ctx, c.req); return err })
			if !errors.Is(err, join.ErrCertificateRefused) {
				return creds, err
			}
			klog.Warningf("node: %v; asking with the token", err)
		}
		if verified, err = c.tokenClient(ctx, url, until); err != nil {
			return creds, err
		}
	}
	defer verified.CloseIdleConnections()
	err := retry(until, func() (err error) { creds, err = verified.Node(ctx, c.req); return err })
	return creds, err
}

// tokenClient is a client of the server at url whose CA it checked against
// the token.
func (c *Credentials) tokenClient(ctx context.Context, url string, until func(error) (error, bool)) (*join.Client, error) {
	cl, err := join.NewClient(url, c.cfg.Token)
	if err != nil {
		return nil, err
	}
	err = retry(until, func() error { return cl.VerifyCA(ctx) })
	if errors.Is(err, join.ErrPinMismatch) {
		// A node that joined before trusts the CA it verified then: after a
		// CA rotation the servers' certificates chain to it, through the
		// new CA's cross-signature, and the token's pin is the old CA's.
		held, rerr := os.ReadFile(c.cfg.Layout.AgentTLS().Cert(pki.ServerCA))
		if rerr != nil {
			return nil, err
		}
		klog.Warningf("node: %v; asking with the token over TLS verified against the CA this node holds", err)
		return join.NewVerifiedClient(url, c.cfg.Token, held)
	}
	if err != nil {
		return nil, err
	}
	klog.Infof("node: the CA of %s is verified against the token", url)
	return cl, nil
}

// retry runs f until until says to stop, and returns what it says.
func retry(until func(error) (error, bool), f func() error) error {
	for {
		if err, stop := until(f()); stop {
			return err
		}
	}
}

// certClient is a client of the server at url that presents the node's
// kubelet client certificate and trusts the CA the node verified when it
// joined; nil when the node has no such certificate valid for another
// minute (it never joined, or was off for the certificate's whole life).
func (c *Credentials) certClient(url string) (*join.Client, error) {
	tlsDir := c.cfg.Layout.AgentTLS()
	ca, err := os.ReadFile(tlsDir.Cert(pki.ServerCA))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(tlsDir.Cert(KubeletClient), tlsDir.Key(KubeletClient))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		klog.Warningf("node: %s is unusable (%v): asking with the token", tlsDir.Cert(KubeletClient), err)
		return nil, nil
	}
	if now := time.Now(); now.Before(cert.Leaf.NotBefore) || now.Add(time.Minute).After(cert.Leaf.NotAfter) {
		return nil, nil
	}
	return join.NewNodeClient(url, ca, cert)
}

func (c *Credentials) Stop() error {
	if c.cancel != nil {
		c.cancel()
		c.wg.Wait()
	}
	return nil
}

// Cluster is what the server said of the cluster (after Start).
func (c *Credentials) Cluster() join.NodeCluster { return c.cluster }

// wait retries what fails because the server is not there, or not ready:
// on a node's first join for FirstJoinTimeout (a wrong --server is the
// likely cause), on a node that joined before as long as it takes.
type wait struct {
	c           *Credentials
	first       bool
	start, last time.Time
	err         error
}

func (c *Credentials) newWait() *wait {
	// A node has joined once its client certificate is written.
	return &wait{c: c, first: !fsutil.Exists(c.cfg.Layout.AgentTLS().Cert(KubeletClient)), start: time.Now()}
}

// done reports whether to stop trying after err; w.err is then the outcome.
func (w *wait) done(ctx context.Context, err error) bool {
	w.err = err
	if !errors.Is(err, join.ErrUnreachable) && !errors.Is(err, join.ErrUnavailable) {
		return true
	}
	server := w.c.cfg.Server
	limit := w.c.cfg.FirstJoinTimeout
	if limit == 0 {
		limit = DefaultFirstJoinTimeout
	}
	if w.first && time.Since(w.start) > limit {
		w.err = fmt.Errorf("the server at %s did not answer for %s (%v): check --server (a hakube server's https port), that the server runs, "+
			"and that this machine reaches it (a firewall?)", server, limit, err)
		return true
	}
	if time.Since(w.last) > 10*time.Second {
		klog.Infof("node: waiting for the server at %s (%s so far): %v", server, time.Since(w.start).Round(time.Second), err)
		w.last = time.Now()
	}
	select {
	case <-ctx.Done():
		w.err = fmt.Errorf("the server at %s did not answer (%v): check --server and that the server runs", server, err)
		return true
	case <-time.After(time.Second):
		return false
	}
}

// password is this machine's node password, made on first use.
func (c *Credentials) password() (string, error) {
	p := c.cfg.Layout.NodePassword()
	if b, err := os.ReadFile(p); err == nil {
		return string(b), nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s := hex.EncodeToString(b)
	return s, fsutil.WriteFile(p, []byte(s), 0o600)
}

// publicKey is the public half of the key at path, made on first use: a
// node keeps its keys across restarts.
func publicKey(path string) (string, error) {
	var key crypto.Signer
	if b, err := os.ReadFile(path); err == nil {
		k, err := pki.ParseKey(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w (remove it to make a new key)", path, err)
		}
		key = k
	} else if os.IsNotExist(err) {
		k, err := pki.NewKey()
		if err != nil {
			return "", err
		}
		b, err := pki.EncodeKey(k)
		if err != nil {
			return "", err
		}
		if err := fsutil.WriteFile(path, b, 0o600); err != nil {
			return "", err
		}
		key = k
	} else {
		return "", err
	}
	pub, err := pki.EncodePublicKey(key.Public())
	return string(pub), err
}
