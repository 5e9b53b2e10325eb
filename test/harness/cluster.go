package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/pki"
)

// Cluster is servers s1..sN, server i on host i of the network.
type Cluster struct {
	Net     *Network
	Servers []*Server
	// InitArgs are added to server 1's --cluster-init, e.g. --datastore=dqlite.
	InitArgs []string
}

// NewEtcdCluster prepares n servers on the first n hosts (not started).
func NewEtcdCluster(t testing.TB, nw *Network, n int, token string) *Cluster {
	c := &Cluster{Net: nw}
	for i := range n {
		s := nw.Hosts[i].Server(t, fmt.Sprintf("s%d", i+1))
		s.Env = []string{"HAKUBE_TOKEN=" + token}
		c.Servers = append(c.Servers, s)
	}
	for _, h := range nw.Hosts[1:] {
		h.CheckRoute(t, nw.Hosts[0].IP)
	}
	return c
}

// Form starts server 1 with --cluster-init and the others joining it, one by one.
func (c *Cluster) Form(t testing.TB) {
	t.Helper()
	c.Servers[0].Start(append([]string{"--cluster-init"}, c.InitArgs...)...)
	for _, s := range c.Servers[1:] {
		s.Start("--server", c.Servers[0].URL())
	}
	c.WaitVoters(t, c.Servers[0], len(c.Servers))
}

// Members runs 'hakube etcd member list' on s.
func (c *Cluster) Members(t testing.TB, s *Server) []datastore.Member {
	t.Helper()
	out, code := s.Hakube("etcd", "member", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("member list on %s: %s", s.Name, out)
	}
	var ms []datastore.Member
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &ms); err != nil {
		t.Fatalf("member list output: %v\n%s", err, out)
	}
	return ms
}

// WaitVoters waits until n healthy voters and no learners are listed by s.
func (c *Cluster) WaitVoters(t testing.TB, s *Server, n int) []datastore.Member {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ms := c.Members(t, s)
		voters, healthy := 0, 0
		for _, m := range ms {
			if !m.Learner {
				voters++
			}
			if m.Healthy {
				healthy++
			}
		}
		if voters == n && len(ms) == n && healthy == n {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d healthy voters, have %+v", n, ms)
		}
		time.Sleep(time.Second)
	}
}

// ServerOf returns the server whose datastore member is called name.
func (c *Cluster) ServerOf(name string) *Server {
	for _, s := range c.Servers {
		// etcd members are "<node>-<random>", Dqlite members "<node>".
		if name == s.Name || strings.HasPrefix(name, s.Name+"-") {
			return s
		}
	}
	return nil
}

// Leader returns the server of the etcd leader, as s sees it.
func (c *Cluster) Leader(t testing.TB, s *Server) *Server {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, m := range c.Members(t, s) {
			if m.Leader {
				if srv := c.ServerOf(m.Name); srv != nil {
					return srv
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(time.Second)
	}
}

// HostOf returns the host a server runs on.
func (c *Cluster) HostOf(s *Server) *Host {
	for _, h := range c.Net.Hosts {
		if h.IP == s.Host {
			return h
		}
	}
	return nil
}

// EtcdClient reaches s's etcd member from inside its host, with the cluster's
// client certificate.
func (c *Cluster) EtcdClient(t testing.TB, s *Server) *clientv3.Client {
	t.Helper()
	h := c.HostOf(s)
	h.CheckRoute(t, h.IP)
	tlsDir := s.Layout().TLS()
	info := transport.TLSInfo{TrustedCAFile: tlsDir.Cert(pki.EtcdServerCA), CertFile: tlsDir.Cert(etcd.ClientCert), KeyFile: tlsDir.Key(etcd.ClientCert)}
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://" + net.JoinHostPort(h.IP, "2379")}, TLS: tlsCfg, DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return h.DialContext(ctx, "tcp", addr) })},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// SocketEtcdClient reaches an etcd API served on a unix socket (kine's, as a
// Dqlite or SQLite server serves it to its apiserver); it is closed with the test.
func SocketEtcdClient(t testing.TB, sock string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// CheckHashesEqual checks that every member has the same KV hash at one revision.
func (c *Cluster) CheckHashesEqual(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	var clients []*clientv3.Client
	for _, s := range c.Servers {
		cli := c.EtcdClient(t, s)
		defer cli.Close()
		clients = append(clients, cli)
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := clients[0].Get(gctx, "/hakube/hash-check")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	var first uint32
	for i, cli := range clients {
		deadline := time.Now().Add(time.Minute)
		for {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			h, err := cli.HashKV(hctx, cli.Endpoints()[0], rev)
			cancel()
			if err == nil {
				if i == 0 {
					first = h.Hash
				} else if h.Hash != first {
					t.Fatalf("member %s has KV hash %d at revision %d, member %s has %d", c.Servers[i].Name, h.Hash, rev, c.Servers[0].Name, first)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("HashKV on %s: %v", c.Servers[i].Name, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("all %d members have KV hash %d at revision %d", len(clients), first, rev)
}

// CheckSameConfigMaps checks that every server lists the same ConfigMaps of
// namespace at the same resource versions: the replicas applied the same log.
// It is the datastore-neutral counterpart of CheckHashesEqual.
func (c *Cluster) CheckSameConfigMaps(t testing.TB, namespace string) {
	t.Helper()
	var first map[string]string
	for i, s := range c.Servers {
		var got map[string]string
		// A server that restarts itself in place may take its stop limit (30 s)
		// and a start to serve again.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			l, err := s.Client().CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
			cancel()
			if err == nil {
				got = map[string]string{}
				for _, cm := range l.Items {
					got[cm.Name] = cm.ResourceVersion + "/" + fmt.Sprint(cm.Data)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("listing through %s: %v", s.Name, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if i == 0 {
			first = got
			continue
		}
		if !maps.Equal(got, first) {
			t.Fatalf("%s lists %d configmaps, %s %d, and they differ", s.Name, len(got), c.Servers[0].Name, len(first))
		}
	}
	t.Logf("all %d servers list the same %d configmaps at the same resource versions", len(c.Servers), len(first))
}

// StartAllReversed starts stopped servers in reverse order, each pointing at
// the first, which comes back last from its own data; they serve once a
// majority is up. It waits up to timeout for every server to be ready.
func (c *Cluster) StartAllReversed(t testing.TB, timeout time.Duration) {
	t.Helper()
	for i := len(c.Servers) - 1; i >= 0; i-- {
		var args []string
		if i > 0 {
			args = []string{"--server", c.Servers[0].URL()}
		}
		if err := c.Servers[i].StartAsync(args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.Servers {
		if err := s.WaitReady(timeout); err != nil {
			t.Fatal(err)
		}
	}
}

// RestartInPlaceLine is what hakube logs when it restarts itself in place.
const RestartInPlaceLine = "stopping the server to restart it in place"

// CheckKubernetesService checks that the kubernetes Service's endpoints list
// n servers at port, the supervisor's (the apiserver itself listens on
// loopback only, where pods cannot reach it), and that discovery names the
// same port.
func CheckKubernetesService(t testing.TB, cs kubernetes.Interface, port, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		s, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err == nil && len(s.Ports) == 1 && s.Ports[0].Port != nil && int(*s.Ports[0].Port) == port && len(s.Endpoints) == n {
			raw, err := cs.Discovery().RESTClient().Get().AbsPath("/api").DoRaw(ctx)
			var versions metav1.APIVersions
			if err == nil {
				err = json.Unmarshal(raw, &versions)
			}
			if err != nil || len(versions.ServerAddressByClientCIDRs) == 0 {
				t.Fatalf("discovery at /api: %v\n%s", err, raw)
			}
			for _, a := range versions.ServerAddressByClientCIDRs {
				if !strings.HasSuffix(a.ServerAddress, ":"+strconv.Itoa(port)) {
					t.Fatalf("discovery names %s, not the supervisor's port %d", a.ServerAddress, port)
				}
			}
			return
		}
		last = fmt.Sprintf("%+v (%v)", s, err)
		time.Sleep(time.Second)
	}
	t.Fatalf("the kubernetes EndpointSlice does not list %d servers at port %d: %s", n, port, last)
}

// NodeReady returns nil if the node's Ready condition is true, else why not.
// One call waits at most 30 s, so a poll loop keeps its pace when a server
// is down.
func NodeReady(cs kubernetes.Interface, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return ReadyCondition(n)
}

// ReadyCondition returns nil if n's Ready condition is true, else why not.
func ReadyCondition(n *corev1.Node) error {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s: %s: %s", n.Name, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition", n.Name)
}

// WaitFor polls cond every 250 ms until it returns nil, and fails the test
// with cond's last error after timeout, or at once when ctx ends (an
// interrupted run must not sit out a long wait).
func WaitFor(ctx context.Context, t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("interrupted while waiting for %s", what)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
