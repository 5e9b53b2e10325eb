package nodes

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/agent/credentials"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/test/harness"
)

// TestAgentSurvivesServerLoss: three servers and an agent that joined
// through server 1 with the agent token; server 1 is SIGKILLed and the agent, through its
// client-side load balancer, stays Ready and runs a new pod. On etcd and on
// Dqlite. Every certificate lasts two minutes (HAKUBE_CERT_VALIDITY): the
// servers and the agent renew theirs while they run, with no restart, and the
// cluster works on past the expiry of the ones they started with. On etcd,
// 'hakube certificate rotate-ca' then replaces the cluster's CAs while the
// kubelet keeps renewing its client certificate through the CSR API. The
// servers run the control plane alone (--disable-agent): four
// kubelets next to three datastore members are more than this machine's two
// cores carry without starving the members' heartbeats.
func TestAgentSurvivesServerLoss(t *testing.T) {
	for _, kind := range []string{"etcd", "dqlite"} {
		t.Run(kind, func(t *testing.T) { agentSurvivesServerLoss(t, kind) })
	}
}

func agentSurvivesServerLoss(t *testing.T, kind string) {
	fig := harness.Figures{}
	defer fig.Write(t, "nodes-ha-"+kind+"-figures.json")
	nw := harness.NewNetwork(t, 4)
	c := harness.NewEtcdCluster(t, nw, 3, "nodes-ha-secret")
	if kind == "dqlite" {
		c.InitArgs = []string{"--datastore=dqlite"}
	}
	// The agent joins with an agent token given to s1 alone: s2 and s3 take
	// it from the bootstrap data, and renew the agent's certificates once s1
	// is gone.
	c.InitArgs = append(c.InitArgs, "--agent-token", "nodes-ha-agent-secret")
	for _, s := range c.Servers {
		s.Env = append(s.Env, shortCerts)
	}
	c.Form(t)
	s1, s2 := c.Servers[0], c.Servers[1]

	a := nw.Hosts[3].Agent(t, "agent-1", s1, s1.Layout().AgentToken())
	a.Env = append(a.Env, shortCerts)
	harness.AddTestImage(t, a.Layout().Images())
	began := time.Now()
	a.Start()
	cs := s2.Client()
	waitFor(t, 2*time.Minute, "agent-1 Ready", func() error { return harness.NodeReady(cs, "agent-1") })
	fig.Record(t, "agent_start_to_node_ready", time.Since(began))
	// Only the agent is a node: the servers run with --disable-agent.
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %d", err, len(nodes.Items))
	}
	// The agent learns every server from the cluster.
	waitFor(t, time.Minute, "the agent knows the three servers", func() error {
		b, err := os.ReadFile(a.Layout().Servers())
		if err != nil {
			return err
		}
		var st struct{ Servers []string }
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		if len(st.Servers) != 3 {
			return fmt.Errorf("servers %v", st.Servers)
		}
		return nil
	})

	first := startedWith(t, nw, c, a)

	t.Logf("killing %s, the server agent-1 joined through", s1.Name)
	killed := time.Now()
	s1.Kill()
	// Ready throughout a minute: longer than the node monitor's grace period
	// (the node's lease must keep being renewed through another server).
	for time.Since(killed) < time.Minute {
		if err := harness.NodeReady(cs, "agent-1"); err != nil {
			t.Fatalf("%s after killing %s: %v\n%s", time.Since(killed).Round(time.Second), s1.Name, err, a.LogTail(30))
		}
		time.Sleep(2 * time.Second)
	}
	p := harness.WebPod("after-loss", "agent-1", nil)
	created := time.Now()
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := runningPod(t, cs, "default", "after-loss", 2*time.Minute)
	fig.Record(t, "pod_running_after_server_loss", time.Since(created))
	if pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("phase %s", pod.Status.Phase)
	}
	renewedInPlace(t, nw, c, a, first)
	if kind == "etcd" {
		rotatedCA(t, fig, nw, c, a)
	}
}

// rotatedCA: 'hakube certificate rotate-ca' on the running cluster (on
// etcd; the Dqlite one is in test/e2e). Every server and the agent end up
// holding the same new bundles, trusting the new CAs alone, and every port
// presents a certificate of the new CA; the agent restarted in place, twice
// (as the same process); the cluster runs a new pod on the agent and serves
// its log (the apiserver's kubelet client and the kubelet's serving
// certificate, both new), and etcd keeps three voters.
func rotatedCA(t *testing.T, fig harness.Figures, nw *harness.Network, c *harness.Cluster, a *harness.Agent) {
	t.Helper()
	s2 := c.Servers[1]
	oldToken := harness.ReadToken(t, s2.Layout().Token())
	pid := a.Pid()
	began := time.Now()
	out, bundle, newCA := harness.RotateCA(t, s2)
	fig.Record(t, "rotate_ca_3_servers_1_agent", time.Since(began))
	t.Logf("hakube certificate rotate-ca (%s):\n%s", time.Since(began).Round(time.Second), out)
	held := map[string]string{a.Name: a.Layout().AgentTLS().Cert(pki.ServerCA)}
	for _, s := range c.Servers {
		held[s.Name] = s.Layout().TLS().Cert(pki.ServerCA)
	}
	for name, f := range held {
		if b, err := os.ReadFile(f); err != nil || string(b) != string(bundle) {
			t.Errorf("%s holds another server CA bundle than %s (%v)", name, s2.Name, err)
		}
	}
	newTok := harness.ReadToken(t, s2.Layout().Token())
	if newTok.Secret != oldToken.Secret || newTok.CAHash == oldToken.CAHash || !strings.Contains(out, newTok.String()) {
		t.Errorf("the token after the rotation is %s (was %s); the command printed:\n%s", newTok, oldToken, out)
	}
	if a.Pid() != pid || !a.Running() {
		t.Fatalf("the agent is not the process it was (pid %d, was %d)", a.Pid(), pid)
	}
	if n := strings.Count(a.FullLog(), "restarting in place to trust the new ones"); n != 2 {
		t.Errorf("the agent restarted in place %d times for the new CAs, want 2 (one per step)", n)
	}

	cs := s2.Client()
	waitFor(t, 2*time.Minute, "agent-1 Ready", func() error { return harness.NodeReady(cs, "agent-1") })
	ports := map[string]*harness.Host{net.JoinHostPort(nw.Hosts[3].IP, "10250"): nw.Hosts[3]}
	for _, s := range c.Servers {
		ports[net.JoinHostPort(s.Host, "6443")] = c.HostOf(s)
	}
	for addr, h := range ports {
		cert, err := h.PresentedCert(addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(newCA); err != nil {
			t.Errorf("%s presents a certificate the new server CA did not sign: %v", addr, err)
		}
	}
	podServesLog(t, cs, s2, "after-ca-rotation", "agent-1")
	c.WaitVoters(t, s2, 3)
}

// shortCerts makes every leaf certificate last two minutes: renewed 39 s
// before its end, checked every 5 s.
const shortCerts = pki.ValidityEnv + "=2m"

// firstCerts is what the servers and the agent started with.
type firstCerts struct {
	// expiry is when the last of their leaf certificates expires.
	expiry time.Time
	// serials are the certificates s2 (supervisor, apiserver) and the
	// agent's kubelet present, by address.
	serials map[string]string
	pids    map[string]int
}

// presented are the serials of the certificates the servers' and the
// kubelet's ports present now, by address.
func presented(t *testing.T, nw *harness.Network, c *harness.Cluster) map[string]string {
	t.Helper()
	out, err := presentedNow(nw, c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func presentedNow(nw *harness.Network, c *harness.Cluster) (map[string]string, error) {
	s2, agentHost := c.HostOf(c.Servers[1]), nw.Hosts[3]
	out := map[string]string{}
	for _, at := range []struct {
		h    *harness.Host
		addr string
	}{
		{s2, net.JoinHostPort(s2.IP, "6443")}, {s2, "127.0.0.1:6444"}, {agentHost, net.JoinHostPort(agentHost.IP, "10250")},
	} {
		cert, err := at.h.PresentedCert(at.addr)
		if err != nil {
			return nil, err
		}
		if time.Now().After(cert.NotAfter) {
			return nil, fmt.Errorf("%s presents a certificate that expired at %s", at.addr, cert.NotAfter)
		}
		out[at.addr] = cert.SerialNumber.String()
	}
	return out, nil
}

func startedWith(t *testing.T, nw *harness.Network, c *harness.Cluster, a *harness.Agent) firstCerts {
	t.Helper()
	f := firstCerts{serials: presented(t, nw, c), pids: map[string]int{a.Name: a.Pid()}}
	dirs := []pki.Dir{a.Layout().AgentTLS()}
	for _, s := range c.Servers[1:] {
		dirs = append(dirs, s.Layout().TLS())
		f.pids[s.Name] = s.Pid()
	}
	certs, err := pki.Check(time.Now(), 0, dirs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range certs {
		if !s.CA && s.NotAfter.After(f.expiry) {
			f.expiry = s.NotAfter
		}
	}
	return f
}

// renewedInPlace: past the expiry of every certificate they started with,
// s2, s3 and the agent run as the same processes and present renewed
// certificates, the cluster runs a scheduled pod and serves its log (the
// apiserver's kubelet client and the kubelet's serving certificate), s1
// rejoins the datastore through peers with renewed certificates, and
// 'certificate rotate' renews at once.
func renewedInPlace(t *testing.T, nw *harness.Network, c *harness.Cluster, a *harness.Agent, first firstCerts) {
	t.Helper()
	s1, s2 := c.Servers[0], c.Servers[1]
	if d := time.Until(first.expiry.Add(5 * time.Second)); d > 0 {
		t.Logf("waiting %s, past %s, when the last of the first certificates expired", d.Round(time.Second), first.expiry.Format(time.TimeOnly))
		time.Sleep(d)
	}
	for _, p := range []*harness.Process{c.Servers[1].Process, c.Servers[2].Process, a.Process} {
		if p.Pid() != first.pids[p.Name] || !p.Running() {
			t.Fatalf("%s restarted (pid %d, was %d)", p.Name, p.Pid(), first.pids[p.Name])
		}
	}
	now := presented(t, nw, c)
	for addr, serial := range now {
		if serial == first.serials[addr] {
			t.Errorf("%s presents the certificate it started with", addr)
		}
	}
	for _, p := range []*harness.Process{s2.Process, a.Process} {
		want := "certificates: renewed serving-kube-apiserver"
		if p == a.Process {
			want = "node: renewed the certificates of node agent-1"
		}
		if !strings.Contains(p.FullLog(), want) {
			t.Errorf("%s's log lacks %q", p.Name, want)
		}
	}
	// A new client reads --write-kubeconfig's file, which holds the renewed
	// admin certificate.
	cs := s2.Client()
	waitFor(t, time.Minute, "agent-1 Ready", func() error { return harness.NodeReady(cs, "agent-1") })
	kubeletRotatedClient(t, cs, a)
	podServesLog(t, cs, s2, "after-expiry", "")
	// A leaf is renewed within 5 s of entering its 39 s window: one with
	// 10 s left is late (a renewal request may take its 30 s on a loaded
	// machine).
	for _, s := range c.Servers[1:] {
		if out, code := s.Hakube("certificate", "check", "--window", "10s"); code != 0 {
			t.Errorf("%s: certificate check exits %d:\n%s", s.Name, code, out)
		} else {
			t.Logf("%s, past the first certificates' expiry: hakube certificate check --window 10s\n%s", s.Name, out)
		}
	}
	if out, code := a.Hakube("certificate", "check", "--window", "10s", "--data-dir", a.DataDir); code != 0 {
		t.Errorf("agent: certificate check exits %d:\n%s", code, out)
	}

	// 'certificate rotate' renews now: s2's apiserver, the agent's node.
	if out, code := s2.Hakube("certificate", "rotate", "--service", "kube-apiserver"); code != 0 ||
		!strings.Contains(out, "renewed "+s2.Layout().TLS().Cert("serving-kube-apiserver")) {
		t.Fatalf("rotate on %s exits %d:\n%s", s2.Name, code, out)
	}
	if out, code := a.Hakube("certificate", "rotate", "--service", "kubelet", "--data-dir", a.DataDir); code != 0 ||
		!strings.Contains(out, "renewed "+a.Layout().AgentTLS().Cert("serving-kubelet")) {
		t.Fatalf("rotate on the agent exits %d:\n%s", code, out)
	}
	// The apiserver and the kubelet load a changed file as it is notified.
	waitFor(t, 30*time.Second, "every port presents the rotated certificate", func() error {
		got, err := presentedNow(nw, c)
		if err != nil {
			return err
		}
		for addr, serial := range got {
			if serial == now[addr] {
				return fmt.Errorf("%s presents the certificate it had before 'certificate rotate'", addr)
			}
		}
		return nil
	})

	s1.Start()
	c.WaitVoters(t, s2, 3)
}

// podServesLog: a new pod runs (on node, if given) and s serves its log,
// through the apiserver's kubelet client and the kubelet's serving
// certificate.
func podServesLog(t *testing.T, cs kubernetes.Interface, s *harness.Server, name, node string) {
	t.Helper()
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), harness.WebPod(name, node, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runningPod(t, cs, "default", name, 2*time.Minute)
	if _, err := s.Kubectl("logs", name); err != nil {
		t.Fatal(err)
	}
}

// kubeletRotatedClient: agent-1's kubelet renewed its client certificate
// through the CSR API, with a key of its own, and its request was approved
// and signed by the controller-manager. (It is Ready past its first
// certificate's expiry: the kubelet reads no other client certificate.)
func kubeletRotatedClient(t *testing.T, cs kubernetes.Interface, a *harness.Agent) {
	t.Helper()
	csrs, err := cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, csr := range csrs.Items {
		if csr.Spec.Username != "system:node:agent-1" || csr.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
			continue
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved && len(csr.Status.Certificate) > 0 {
				issued++
			}
		}
	}
	if issued == 0 {
		t.Fatalf("no kubelet client CSR of agent-1 was approved and issued (of %d CSRs)", len(csrs.Items))
	}
	cert := harness.ReadCert(t, filepath.Join(a.Layout().KubeletCerts(), "kubelet-client-current.pem"))
	key := harness.ReadKey(t, a.Layout().AgentTLS().Key(credentials.KubeletClient))
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || pub.Equal(key.Public()) || cert.Subject.CommonName != "system:node:agent-1" {
		t.Fatalf("the kubelet's current client certificate is %s, for the key it joined with: %v", cert.Subject, ok)
	}
	if life, want := cert.NotAfter.Sub(cert.NotBefore), 2*time.Minute; life > want+10*time.Minute {
		t.Errorf("the kubelet's client certificate from the CSR API lives %s; HAKUBE_CERT_VALIDITY is %s", life, want)
	}
	t.Logf("agent-1's kubelet renewed its client certificate through the CSR API (%d issued), valid until %s", issued, cert.NotAfter.Format(time.RFC3339))
}
