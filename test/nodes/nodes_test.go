// Package nodes tests hakube's nodes end to end: servers that are nodes and
// agents, each on a host of its own (network and mount namespaces), running
// real pods with containerd, runc, flannel, kube-proxy and CoreDNS.
package nodes

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/test/harness"
)

// TestServerAndAgent: a server is a Ready node and runs a pod from an image
// in agent/images; an agent joins; pods on the two nodes reach each other by
// pod IP, a ClusterIP Service by its DNS name, a NodePort from a node;
// kubectl logs, exec and port-forward work; a wrong token and a taken node
// name are refused; a restarted node keeps its pods. On a single server's
// SQLite with VXLAN, and on Dqlite with host routes.
func TestServerAndAgent(t *testing.T) {
	for _, v := range []struct {
		name       string
		serverArgs []string
		backend    string
		// agentImage is how the agent's image tarball is compressed.
		agentImage string
	}{
		{"sqlite-vxlan", []string{"--secrets-encryption"}, "vxlan", ".tar.gz"},
		{"dqlite-host-gw", []string{"--cluster-init", "--datastore=dqlite"}, "host-gw", ".tar.zst"},
	} {
		t.Run(v.name, func(t *testing.T) { serverAndAgent(t, v.name, v.serverArgs, v.backend, v.agentImage) })
	}
}

func serverAndAgent(t *testing.T, name string, serverArgs []string, backend, agentImage string) {
	fig := harness.Figures{}
	defer fig.Write(t, "nodes-"+name+"-figures.json")
	nw := harness.NewNodeNetwork(t, 3)
	h1, h2, h3 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]

	s := h1.NodeServer(t, "server-1")
	s.Args = append(s.Args, "--flannel-backend="+backend)
	harness.AddTestImage(t, s.Layout().Images())
	began := time.Now()
	s.Start(serverArgs...)
	cs := s.Client()
	ctx := context.Background()
	waitFor(t, 2*time.Minute, "server-1 Ready", func() error { return harness.NodeReady(cs, "server-1") })
	fig.Record(t, "server_start_to_node_ready", time.Since(began))
	n, err := cs.CoreV1().Nodes().Get(ctx, "server-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["node-role.kubernetes.io/control-plane"] != "true" {
		waitFor(t, 30*time.Second, "control-plane label", func() error {
			n, err := cs.CoreV1().Nodes().Get(ctx, "server-1", metav1.GetOptions{})
			if err == nil && n.Labels["node-role.kubernetes.io/control-plane"] != "true" {
				err = fmt.Errorf("labels %v", n.Labels)
			}
			return err
		})
	}
	if log := s.CurrentLog(); !strings.Contains(log, "node: containerd is up") || !strings.Contains(log, "images imported") {
		t.Fatalf("the server's log lacks the node's progress lines:\n%s", s.LogTail(60))
	}
	if slices.Contains(serverArgs, "--secrets-encryption") {
		// A Secret in the SQLite database (or its WAL) is ciphertext.
		harness.CreateCanarySecret(t, s)
		// The WAL first: a checkpoint between the reads moves rows into the
		// database, not out of both.
		f := s.Layout().SQLiteFiles()
		st := harness.CheckSecretsEncrypted(t, s, f[1], f[0])
		t.Logf("secrets encryption: %d Secrets under %s", st.Secrets, st.Active)
	}

	// A Deployment from the image in agent/images runs on the server's node.
	dep, err := s.Kubectl("create", "deployment", "hello", "--image="+harness.TestImage, "--", "/agnhost", "netexec", "--http-port=8080")
	if err != nil {
		t.Fatal(err, dep)
	}
	waitFor(t, 2*time.Minute, "deployment hello available", func() error {
		out, err := s.Kubectl("get", "deployment", "hello", "-o", "jsonpath={.status.availableReplicas}")
		if err == nil && strings.TrimSpace(out) != "1" {
			err = fmt.Errorf("available %q", out)
		}
		return err
	})

	// An agent joins through the server.
	a := h2.Agent(t, "agent-1", s, s.TokenFile())
	registry := fakeRegistry(t, h1)
	a.Args = append(a.Args, "--flannel-backend="+backend, "--node-label=hakube.test/zone=lab", "--private-registry", registry.config)
	harness.AddTestImage(t, a.Layout().Images(), agentImage)
	began = time.Now()
	a.Start()
	waitFor(t, 2*time.Minute, "agent-1 Ready", func() error { return harness.NodeReady(cs, "agent-1") })
	fig.Record(t, "agent_start_to_node_ready", time.Since(began))
	for _, line := range []string{"CA of", "certificates received", "containerd is up", "images imported", "registered as agent-1",
		"pod network up (" + backend, "is Ready"} {
		if !strings.Contains(a.CurrentLog(), line) {
			t.Fatalf("the agent's log lacks %q:\n%s", line, a.LogTail(60))
		}
	}
	if n, err := cs.CoreV1().Nodes().Get(ctx, "agent-1", metav1.GetOptions{}); err != nil || n.Labels["hakube.test/zone"] != "lab" ||
		n.Labels["node-role.kubernetes.io/control-plane"] != "" {
		t.Fatalf("agent-1's labels: %v %v", err, n.Labels)
	}

	// Pods on the two nodes reach each other by pod IP.
	labels := map[string]string{"app": "web"}
	for _, p := range []*corev1.Pod{harness.WebPod("web-1", "server-1", labels), harness.WebPod("web-2", "agent-1", labels)} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p1 := runningPod(t, cs, "default", "web-1", 2*time.Minute)
	p2 := runningPod(t, cs, "default", "web-2", 2*time.Minute)
	if p1.Status.PodIP == "" || p2.Status.PodIP == "" || p1.Status.PodIP == p2.Status.PodIP {
		t.Fatalf("pod IPs %q and %q", p1.Status.PodIP, p2.Status.PodIP)
	}
	for _, c := range [][2]string{{"web-1", p2.Status.PodIP}, {"web-2", p1.Status.PodIP}} {
		if out, err := s.Kubectl("exec", c[0], "--", "/agnhost", "connect", "--timeout=5s", net.JoinHostPort(c[1], "8080")); err != nil {
			t.Fatalf("%s cannot reach the pod at %s: %v %s", c[0], c[1], err, out)
		}
	}

	// A ClusterIP Service, by its DNS name, from a pod on the other node.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if svc, err = cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the Service by its DNS name from a pod on agent-1", func() error {
		out, err := s.Kubectl("exec", "web-2", "--", "/agnhost", "connect", "--timeout=3s", "web.default.svc.cluster.local:80")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	// The NodePort, from a node, to the other node's address.
	nodePort := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	waitFor(t, time.Minute, "the NodePort of server-1 from agent-1's host", func() error {
		h2.CheckRoute(t, h1.IP)
		c, err := h2.DialContext(ctx, "tcp", net.JoinHostPort(h1.IP, nodePort))
		if err == nil {
			c.Close()
		}
		return err
	})

	// kubectl logs, exec and port-forward reach the kubelets.
	if out, err := s.Kubectl("logs", "web-2"); err != nil || !strings.Contains(out, "8080") {
		t.Fatalf("kubectl logs: %v %q", err, out)
	}
	if out, err := s.Kubectl("exec", "web-2", "--", "/agnhost", "etc-hosts"); err != nil || !strings.Contains(out, p2.Status.PodIP+"\tweb-2") {
		t.Fatalf("kubectl exec: %v %q", err, out)
	}
	checkPortForward(t, s, h1, "web-2")

	// hakube ctr and crictl reach the node's containerd: the imported images
	// are pinned, and the pod's container is there.
	out, code := a.Hakube("ctr", "--data-dir", a.DataDir, "images", "ls")
	if code != 0 || !strings.Contains(out, harness.TestImage) || !strings.Contains(out, "io.cri-containerd.pinned=pinned") {
		t.Fatalf("hakube ctr images ls: exit %d:\n%s", code, out)
	}
	out, code = a.Hakube("crictl", "--data-dir", a.DataDir, "ps", "--name", "web", "-o", "json")
	if code != 0 || !strings.Contains(out, `"io.kubernetes.pod.name": "web-2"`) {
		t.Fatalf("hakube crictl ps: exit %d:\n%s", code, out)
	}

	// hakube certificate check lists the server's and the agent's certificates.
	checkCertificates(t, s.Hakube, "serving-kube-apiserver", "server-ca", "etcd/peer-ca", "client-kubelet")
	checkCertificates(t, func(args ...string) (string, int) { return a.Hakube(append(args, "--data-dir", a.DataDir)...) },
		"client-kubelet", "serving-kubelet", "client-kube-proxy")
	// The keys, kubeconfigs, token and databases of both are 0600 (CIS 1.1, 4.1).
	t.Logf("file modes: %d files on the server, %d on the agent, none open to others",
		harness.CheckFileModes(t, s.DataDir), harness.CheckFileModes(t, a.DataDir))

	// A wrong token, and a taken node name, are refused with what to do.
	bad := h3.Agent(t, "agent-bad", s, "")
	bad.Args = append(bad.Args, "--token", "wrong-secret")
	refused(t, bad, "token is wrong")
	refused(t, h3.Agent(t, "agent-1", s, s.TokenFile()), "kubectl delete node agent-1")

	// An image not imported is pulled through the registries.yaml mirror,
	// with its credentials.
	pull := harness.WebPod("pull", "agent-1", nil)
	pull.Spec.Containers[0].Image, pull.Spec.Containers[0].ImagePullPolicy = "docker.io/hakube/not-imported:1", corev1.PullAlways
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pull, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "a pull through the mirror", registry.pulled)
	if err := cs.CoreV1().Pods("default").Delete(ctx, "pull", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// An imported image with imagePullPolicy: Always comes from the node's
	// own mirror, before registries.yaml's (no registry is reachable); a
	// second pull too (the first rewrites the image's record).
	for _, name := range []string{"always-1", "always-2"} {
		always := harness.WebPod(name, "agent-1", nil)
		always.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		if _, err := cs.CoreV1().Pods("default").Create(ctx, always, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		runningPod(t, cs, "default", name, time.Minute)
		if asked := registry.asked("/v2/hakube/agnhost/"); len(asked) > 0 {
			t.Fatalf("registries.yaml's mirror was asked for an imported image: %v", asked)
		}
		if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Such a pull rewrites the image's record without its pin; the node
	// pins it again, so image garbage collection cannot delete it.
	waitFor(t, time.Minute, "the imported image pinned after the pulls", func() error {
		out, code := a.Hakube("ctr", "--data-dir", a.DataDir, "images", "ls")
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, harness.TestImage+" ") {
				if strings.Contains(line, "io.cri-containerd.pinned=pinned") {
					return nil
				}
				return fmt.Errorf("not pinned: %s", line)
			}
		}
		return fmt.Errorf("exit %d, no %s:\n%s", code, harness.TestImage, out)
	})

	// A restarted node keeps its pods: the same containers, no restarts.
	before := containerIDs(t, cs, "web-2")
	a.Stop()
	a.Start()
	waitFor(t, 2*time.Minute, "agent-1 Ready again", func() error { return harness.NodeReady(cs, "agent-1") })
	after := runningPod(t, cs, "default", "web-2", time.Minute)
	if got := containerIDsOf(after); got != before {
		t.Fatalf("web-2's containers changed across the node's restart: %s -> %s", before, got)
	}

	podStartupLatency(t, s, fig, 30)
	fig.Set(t, "server_with_node_rss_mb", rssMB(t, s.Pid()), "MB")
	fig.Set(t, "agent_rss_mb", rssMB(t, a.Pid()), "MB")
}

// registry is a stand-in for a registry mirror on a host: it records the
// requests containerd sends it and answers 404.
type registry struct {
	config string // the registries.yaml naming it
	mu     sync.Mutex
	seen   []string
}

func fakeRegistry(t *testing.T, h *harness.Host) *registry {
	t.Helper()
	l, err := h.Listen("tcp", net.JoinHostPort(h.IP, "5000"))
	if err != nil {
		t.Fatal(err)
	}
	r := &registry{config: filepath.Join(t.TempDir(), "registries.yaml")}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.URL.Path+" "+req.Header.Get("Authorization"))
		r.mu.Unlock()
		http.NotFound(w, req)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	yaml := fmt.Sprintf("mirrors:\n  docker.io:\n    endpoint: [\"http://%s:5000\"]\nconfigs:\n  \"%s:5000\":\n    auth: {username: lab, password: secret}\n", h.IP, h.IP)
	if err := os.WriteFile(r.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// pulled reports whether containerd asked the mirror for the image's
// manifest with the configured credentials.
func (r *registry) pulled() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("lab:secret"))
	for _, s := range r.seen {
		if strings.HasPrefix(s, "/v2/hakube/not-imported/manifests/1 ") && strings.HasSuffix(s, want) {
			return nil
		}
	}
	return fmt.Errorf("requests seen: %v", r.seen)
}

// asked is the requests seen whose path starts with prefix.
func (r *registry) asked(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.seen {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// checkCertificates runs hakube certificate check: the certificates named
// are there, every one is far from its expiry (exit 0), and a window longer
// than a leaf's year fails the check (exit 1), naming the leaves.
func checkCertificates(t *testing.T, hakube func(...string) (string, int), want ...string) {
	t.Helper()
	out, code := hakube("certificate", "check", "-o", "json")
	var certs []pki.CertStatus
	if i, j := strings.Index(out, "["), strings.LastIndex(out, "]"); code != 0 || i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &certs) != nil {
		t.Fatalf("certificate check -o json: exit %d\n%s", code, out)
	}
	byName := map[string]pki.CertStatus{}
	for _, c := range certs {
		byName[c.Name] = c
		if c.State != pki.StateOK || c.SecondsLeft < 360*24*3600 {
			t.Errorf("certificate %s: %s, %d s left", c.Name, c.State, c.SecondsLeft)
		}
	}
	for _, n := range want {
		if _, ok := byName[n]; !ok {
			t.Errorf("certificate check lacks %s:\n%s", n, out)
		}
	}
	if table, code := hakube("certificate", "check"); code != 0 {
		t.Fatalf("certificate check: exit %d\n%s", code, table)
	} else {
		t.Logf("hakube certificate check:\n%s", table)
	}
	out, code = hakube("certificate", "check", "--window", "9000h")
	if code != 1 || !strings.Contains(out, "expire within 375d") || !strings.Contains(out, want[0]) ||
		!regexp.MustCompile(`FILE +SUBJECT +CA +EXPIRES +LEFT +STATE`).MatchString(out) {
		t.Fatalf("certificate check --window 9000h: exit %d\n%s", code, out)
	}
}

// refused runs an agent that must not join: it exits non-zero and says why.
func refused(t *testing.T, a *harness.Agent, want string) {
	t.Helper()
	out, code := a.RunToExit()
	if code == 0 || !strings.Contains(out, want) || !strings.Contains(out, "hakube: error:") {
		t.Fatalf("agent %s: exit code %d, want a failure saying %q:\n%s", a.Name, code, want, out)
	}
}

func containerIDs(t *testing.T, cs kubernetes.Interface, name string) string {
	t.Helper()
	p, err := cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return containerIDsOf(p)
}

// containerIDsOf names the pod's containers and their restarts.
func containerIDsOf(p *corev1.Pod) string {
	var out []string
	for _, c := range p.Status.ContainerStatuses {
		out = append(out, fmt.Sprintf("%s=%s/%d", c.Name, c.ContainerID, c.RestartCount))
	}
	return strings.Join(out, ",")
}

// podStartupLatency creates n pods from a local image at once and records
// their startup latencies' p50 and p99.
func podStartupLatency(t *testing.T, s *harness.Server, fig harness.Figures, n int) {
	t.Helper()
	lat := harness.PodStartup(t, s.Client(), n)
	fig.Record(t, "pod_startup_p50", percentile(lat, 0.50))
	fig.Record(t, "pod_startup_p99", percentile(lat, 0.99))
}

// checkPortForward forwards a local port on h to the pod's 8080.
func checkPortForward(t *testing.T, s *harness.Server, h *harness.Host, pod string) {
	t.Helper()
	port := strconv.Itoa(harness.FreePortPair(t))
	argv := append(append([]string{}, s.Wrap...), "kubectl", "--kubeconfig", s.Kubeconfig, "--server", s.URL(), "port-forward", "pod/"+pod, port+":8080")
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitFor(t, 30*time.Second, "kubectl port-forward", func() error {
		c, err := h.DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /hostname HTTP/1.0\r\n\r\n"); err != nil {
			return err
		}
		b := make([]byte, 512)
		n, _ := c.Read(b)
		if !strings.Contains(string(b[:n]), pod) {
			return fmt.Errorf("answer %q", b[:n])
		}
		return nil
	})
}
