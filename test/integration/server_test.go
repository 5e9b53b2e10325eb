// Package integration runs a real hakube server process on loopback and drives
// it with client-go and the real kubectl.
package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/token"
	"github.com/hakube/hakube/test/harness"
)

// On SQLite, created without --secrets-encryption: enable and disable on the
// running server.
func TestSingleServerLifecycle(t *testing.T) { testLifecycle(t, checkEnableDisable) }

// checkEnableDisable: enable encrypts the stored Secrets, disable stores them
// in clear again; the server reads them throughout, and neither restarts it.
func checkEnableDisable(t *testing.T, s *harness.Server) {
	harness.CreateCanarySecret(t, s)
	starts := strings.Count(s.CurrentLog(), "hakube is ready")
	read := func(when string) {
		t.Helper()
		out, err := s.Kubectl("get", "secret", "enc-canary", "-o", "jsonpath={.data.value}")
		if want := base64.StdEncoding.EncodeToString([]byte(harness.CanaryValue)); err != nil || strings.TrimSpace(out) != want {
			t.Fatalf("%s, the canary Secret reads %q (%v)", when, out, err)
		}
	}
	for _, op := range []string{"enable", "disable"} {
		out, code := s.Hakube("secrets-encrypt", op)
		if code != 0 {
			t.Fatalf("secrets-encrypt %s: exit %d\n%s", op, code, out)
		}
		t.Logf("hakube secrets-encrypt %s (SQLite):\n%s", op, out)
		read("after " + op)
		if op == "enable" {
			harness.CheckSecretsEncrypted(t, s)
			continue
		}
		out, code = s.Hakube("secrets-encrypt", "status", "-o", "json")
		var st secretsencrypt.Status
		if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st) != nil || st.Enabled || len(st.Keys) != 0 ||
			st.Secrets == 0 || st.ByKey[secretsencrypt.Clear] != st.Secrets || !st.ServersAgree {
			t.Fatalf("status after disable: exit %d\n%s", code, out)
		}
	}
	if strings.Count(s.CurrentLog(), "hakube is ready") != starts || strings.Contains(s.CurrentLog(), "to restart it in place") {
		t.Fatal("the server restarted during enable or disable")
	}
}

// The same on a one-member Dqlite cluster: the apiserver on kine's etcd API
// over the Raft-replicated SQLite backend; the member commands work on it.
func TestSingleServerLifecycleDqlite(t *testing.T) {
	store := harness.StartS3(t, nil, "127.0.0.1", harness.FreePortPair(t))
	testLifecycle(t, func(t *testing.T, s *harness.Server) {
		out, code := s.Hakube("etcd", "member", "list", "-o", "json")
		var ms []datastore.Member
		if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "["):]), &ms) != nil {
			t.Fatalf("member list: exit %d\n%s", code, out)
		}
		if len(ms) != 1 || !ms[0].Leader || !ms[0].Healthy || ms[0].Learner || ms[0].Name != "server" {
			t.Fatalf("member list of a one-member Dqlite cluster: %+v", ms)
		}
		if out, code := s.Hakube("etcd", "member", "remove", "server"); code == 0 || !strings.Contains(out, "quorum") {
			t.Fatalf("removing the only member: exit %d\n%s", code, out)
		}
		checkScheduledSnapshots(t, s, "dqlite")
		checkS3Copies(t, s, store)
	}, append([]string{"--cluster-init", "--datastore=dqlite", "--node-name=server", "--etcd-snapshot-schedule-cron=@every 3s",
		"--etcd-snapshot-retention=2"}, store.Flags()...)...)
}

// checkS3Copies waits until the server has pruned its copies in the S3 store
// (retention 2), then lists them with 'etcd-snapshot ls --etcd-s3': each has
// the SHA-256 of the local snapshot of its name, and the stored object is
// that file.
func checkS3Copies(t *testing.T, s *harness.Server, store *harness.S3) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(s.CurrentLog(), "from S3 (retention 2)") {
		if time.Now().After(deadline) {
			t.Fatalf("no S3 copy pruned within a minute:\n%s", s.LogTail(20))
		}
		time.Sleep(time.Second)
	}
	out, code := s.Hakube(append([]string{"etcd-snapshot", "ls", "-o", "json"}, store.Flags()...)...)
	var list []snapshot.Meta
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "["):]), &list) != nil {
		t.Fatalf("etcd-snapshot ls --etcd-s3: exit %d\n%s", code, out)
	}
	local := map[string]snapshot.Meta{}
	remote := 0
	for _, m := range list {
		if !strings.HasPrefix(m.Location, "s3://") {
			local[m.Name] = m
			continue
		}
		remote++
		if m.Location != "s3://"+store.Bucket+"/cluster-a/"+m.Name || m.SHA256 == "" {
			t.Fatalf("S3 copy %+v", m)
		}
		if l, ok := local[m.Name]; ok && l.SHA256 != m.SHA256 {
			t.Fatalf("S3 copy of %s has SHA-256 %s, the local one %s", m.Name, m.SHA256, l.SHA256)
		}
		b, err := os.ReadFile(filepath.Join(store.Dir, store.Bucket, "cluster-a", m.Name))
		if err != nil || int64(len(b)) != m.Size || !bytes.HasPrefix(b, []byte("SQLite format 3")) {
			t.Fatalf("stored object of %s: %d bytes (%v), metadata says %d", m.Name, len(b), err, m.Size)
		}
	}
	// The scheduler may be between its next copy and prune: 2 or 3.
	if remote < 2 || remote > 3 {
		t.Fatalf("%d copies in S3 with retention 2:\n%s", remote, out)
	}
}

// checkScheduledSnapshots waits until the server (snapshots every 3 s,
// retention 2) has pruned, then checks the snapshots left.
func checkScheduledSnapshots(t *testing.T, s *harness.Server, kind string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(s.CurrentLog(), "snapshots: pruned") {
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled snapshot pruned within a minute:\n%s", s.LogTail(20))
		}
		time.Sleep(time.Second)
	}
	dir := snapshot.Dir(filepath.Join(s.DataDir, "server", "db", "snapshots"))
	list, err := dir.List()
	// The scheduler may be between its next save and prune: 2 or 3.
	if err != nil || len(list) < 2 || len(list) > 3 {
		t.Fatalf("%d scheduled snapshots with retention 2 (%v): %+v", len(list), err, list)
	}
	for _, m := range list {
		if err := dir.Verify(m.Name); err != nil || m.Datastore != kind || !strings.HasPrefix(m.Name, "etcd-snapshot-") {
			t.Fatalf("scheduled snapshot %+v: %v", m, err)
		}
	}
}

// testLifecycle drives one server started with args through writes, reads,
// a restart and refused restarts; check runs while it is up.
func testLifecycle(t *testing.T, check func(*testing.T, *harness.Server), args ...string) {
	s := harness.NewServer(t, "server")
	s.Args = append(s.Args, args...)
	began := time.Now()
	s.Start()
	t.Logf("FIGURE ready_seconds=%.1f", time.Since(began).Seconds())
	ctx := context.Background()
	cs := s.Client()

	// client-go: create, read, update, delete.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-keep"}, Data: map[string]string{"k": "v1"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "cm-keep", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v1" {
		t.Fatalf("get configmap: %v %v", got, err)
	}
	got.Data["k"] = "v2"
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A stale resourceVersion must conflict.
	got.Data["k"] = "v3"
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update with stale resourceVersion: want conflict, got %v", err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec-keep"}, StringData: map[string]string{"password": "hunter2"}}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gone := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec-gone"}}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, gone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Secrets("default").Delete(ctx, "sec-gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkControllersAndScheduler(t, cs)
	harness.CheckKubernetesService(t, cs, s.Port, 1)

	// The real kubectl: create, read, update, delete.
	mustKubectl(t, s, "create", "configmap", "kc-keep", "--from-literal=a=1")
	mustKubectl(t, s, "patch", "configmap", "kc-keep", "-p", `{"data":{"a":"2"}}`)
	if out := mustKubectl(t, s, "get", "configmap", "kc-keep", "-o", "jsonpath={.data.a}"); out != "2" {
		t.Fatalf("kubectl get after patch = %q", out)
	}
	mustKubectl(t, s, "create", "secret", "generic", "kc-secret", "--from-literal=token=abc")
	mustKubectl(t, s, "create", "configmap", "kc-gone")
	mustKubectl(t, s, "delete", "configmap", "kc-gone")
	mustKubectl(t, s, "scale", "deployment", "web", "--replicas=3")
	if out := mustKubectl(t, s, "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"); out != "3" {
		t.Fatalf("replicas after kubectl scale = %q", out)
	}

	checkAuth(t, s)
	checkFiles(t, s)
	t.Logf("%d credential and data files, none open to others", harness.CheckFileModes(t, s.DataDir))
	if check != nil {
		check(t, s)
	}

	// Restart: every object is still there, deleted ones stay gone.
	if code := s.Stop(); code != 0 {
		t.Fatalf("SIGTERM exit code %d, want 0", code)
	}
	began = time.Now()
	s.Start()
	t.Logf("FIGURE restart_ready_seconds=%.1f", time.Since(began).Seconds())
	cs = s.Client()
	if c, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "cm-keep", metav1.GetOptions{}); err != nil || c.Data["k"] != "v2" {
		t.Fatalf("cm-keep after restart: %v %v", c, err)
	}
	if sc, err := cs.CoreV1().Secrets("default").Get(ctx, "sec-keep", metav1.GetOptions{}); err != nil || string(sc.Data["password"]) != "hunter2" {
		t.Fatalf("sec-keep after restart: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("default").Get(ctx, "sec-gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("sec-gone after restart: want NotFound, got %v", err)
	}
	if out := mustKubectl(t, s, "get", "configmap", "kc-keep", "-o", "jsonpath={.data.a}"); out != "2" {
		t.Fatalf("kc-keep after restart = %q", out)
	}
	if _, err := s.Kubectl("get", "configmap", "kc-gone"); err == nil {
		t.Fatal("kc-gone exists after restart")
	}
	if out := mustKubectl(t, s, "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"); out != "3" {
		t.Fatalf("deployment after restart: replicas %q", out)
	}
	mustKubectl(t, s, "get", "secret", "kc-secret")

	// A restart with another token, or changed critical settings, is refused.
	s.Stop()
	out, code := harness.RunHakube(t, nil, s.CommandArgs("--token", "not-the-token")...)
	if code == 0 || !strings.Contains(out, "differs from the one this server was created with") {
		t.Fatalf("restart with another token: exit %d, output:\n%s", code, out)
	}
	out, code = harness.RunHakube(t, nil, s.CommandArgs("--service-cidr", "10.99.0.0/16", "--cluster-dns", "10.99.0.10")...)
	if code == 0 || !strings.Contains(out, `--service-cidr is "10.99.0.0/16" here but "10.43.0.0/16" in the cluster`) {
		t.Fatalf("restart with another service CIDR: exit %d, output:\n%s", code, out)
	}
	// Even with the local token file gone, the datastore knows its token.
	if err := os.Remove(filepath.Join(s.DataDir, "server", "token")); err != nil {
		t.Fatal(err)
	}
	out, code = harness.RunHakube(t, nil, s.CommandArgs("--token", "not-the-token")...)
	if code == 0 || !strings.Contains(out, "the datastore was created with a different token") {
		t.Fatalf("restart with another token and no token file: exit %d, output:\n%s", code, out)
	}
}

// checkControllersAndScheduler proves the controller manager (deployment →
// replica set → pods) and the scheduler (pods bound to a registered node) run.
func checkControllersAndScheduler(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "fake-node"},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}},
		},
	}
	n, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status = node.Status
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		bound := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName == "fake-node" {
				bound++
			}
		}
		return bound == 2, nil
	})
	if err != nil {
		t.Fatalf("deployment pods were not created and scheduled: %v", err)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "fake-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkAuth: no identity → 401, a forged identity header → 401, a user without
// RBAC grants → 403, a certificate from another CA → TLS refused.
func checkAuth(t *testing.T, s *harness.Server) {
	t.Helper()
	tlsDir := pki.Dir(filepath.Join(s.DataDir, "server", "tls"))
	caPEM, err := os.ReadFile(tlsDir.Cert(pki.ServerCA))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	url := fmt.Sprintf("https://127.0.0.1:%d/api/v1/namespaces/default/secrets", s.Port)
	get := func(certs []tls.Certificate, header map[string]string) (int, error) {
		cfg := &tls.Config{RootCAs: roots}
		if len(certs) > 0 {
			// Send the certificate whatever CAs the server asks for.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(nil, nil); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("anonymous list secrets: %d %v, want 401", code, err)
	}
	if code, err := get(nil, map[string]string{"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("forged X-Remote-User: %d %v, want 401", code, err)
	}
	clientCA, err := tlsDir.LoadCA(pki.ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := clientCA.Issue(pki.Leaf{CommonName: "alice", Usage: pki.ClientAuth})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get([]tls.Certificate{alice}, nil); err != nil || code != http.StatusForbidden {
		t.Fatalf("alice (no RBAC grants) list secrets: %d %v, want 403", code, err)
	}
	rogueCA, err := pki.NewCA("rogue")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _ = rogueCA.Issue(pki.Leaf{CommonName: "system:admin", Organization: []string{"system:masters"}, Usage: pki.ClientAuth})
	rogue, _ := tls.X509KeyPair(certPEM, keyPEM)
	if code, err := get([]tls.Certificate{rogue}, nil); err == nil {
		t.Fatalf("certificate from another CA was accepted (HTTP %d)", code)
	}

	// client-go with only a bearer token that is not valid.
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", s.Port), BearerToken: "bogus", TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Secrets("default").List(context.Background(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("bogus bearer token: want Unauthorized, got %v", err)
	}
}

// checkFiles: modes, the token's CA pin, /cacerts and /ping.
func checkFiles(t *testing.T, s *harness.Server) {
	t.Helper()
	modes := map[string]os.FileMode{
		s.DataDir:                                   0o700,
		filepath.Join(s.DataDir, "server"):          0o700,
		filepath.Join(s.DataDir, "server", "token"): 0o600,
		s.Kubeconfig:                                0o600,
	}
	keys, _ := filepath.Glob(filepath.Join(s.DataDir, "server", "tls", "*.key"))
	etcdKeys, _ := filepath.Glob(filepath.Join(s.DataDir, "server", "tls", "etcd", "*.key"))
	if len(keys) < 8 || len(etcdKeys) != 2 {
		t.Fatalf("expected CA and leaf keys, found %v %v", keys, etcdKeys)
	}
	dqliteKeys, _ := filepath.Glob(filepath.Join(s.DataDir, "server", "tls", "dqlite", "*.key"))
	for _, k := range append(append(keys, etcdKeys...), dqliteKeys...) {
		modes[k] = 0o600
	}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/cacerts", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if tok.CAHash == "" || token.HashCA(served) != tok.CAHash {
		t.Fatalf("token CA hash %q does not pin the served CA (hash %s)", tok.CAHash, token.HashCA(served))
	}
	resp, err = insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/ping", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "pong" {
		t.Fatalf("/ping = %q", body)
	}
}

func mustKubectl(t *testing.T, s *harness.Server, args ...string) string {
	t.Helper()
	out, err := s.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
