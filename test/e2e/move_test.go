package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// TestDqliteToEtcdAndBack: a three-server Dqlite cluster holding 1,000
// objects of six kinds (Secrets among them) moves to embedded etcd when one
// server restarts with --cluster-init --datastore=etcd; the other two, removed
// from the Dqlite cluster, stop and rejoin with their usual --server. Every
// object is identical by content through every server, the cluster survives
// the loss of its leader, and it moves back to Dqlite the same way, this time
// with one server down during the move (it rejoins when it comes back).
func TestDqliteToEtcdAndBack(t *testing.T) {
	nw := harness.NewNetwork(t, 3)
	c := &cluster{Cluster: harness.NewEtcdCluster(t, nw, 3, secret), t: t}
	c.InitArgs = []string{"--datastore=dqlite"}
	fig := figures{}
	defer fig.Write(t, "e2e-move-figures.json")
	c.Form(t)
	s1 := c.Servers[0]

	began := time.Now()
	createMoveObjects(t, s1)
	fig.Record(t, "create_1000_objects", time.Since(began))
	want := moveObjects(t, s1)
	if len(want) != 1000 {
		t.Fatalf("%d objects listed after creating 1000", len(want))
	}

	for _, to := range []string{"etcd", "dqlite"} {
		var down *harness.Server
		if to == "dqlite" {
			down = c.Servers[2]
		}
		moveCluster(t, c, fig, to, down)
		for _, s := range c.Servers {
			compareObjects(t, s, want, moveObjects(t, s))
		}
		loseLeader(t, c, fig, to)
	}
}

// moveCluster moves the cluster's data into the datastore kind to through
// server 1, with down (if any) stopped, then restarts the removed servers
// with --server.
func moveCluster(t *testing.T, c *cluster, fig figures, to string, down *harness.Server) {
	t.Helper()
	s1, others := c.Servers[0], c.Servers[1:]
	for _, s := range []*harness.Server{down, s1} {
		if s != nil {
			if code := s.Stop(); code != 0 {
				t.Fatalf("%s exit code %d on SIGTERM", s.Name, code)
			}
		}
	}
	began := time.Now()
	s1.Start("--cluster-init", "--datastore="+to)
	fig.Record(t, "move_to_"+to+"_server1_ready", time.Since(began))
	m := regexp.MustCompile(`migrate: copied (\d+) keys from (\w+) into ` + to).FindStringSubmatch(s1.CurrentLog())
	if m == nil {
		t.Fatalf("%s did not report the copy into %s", s1.Name, to)
	}
	t.Log(m[0])
	if n, _ := strconv.Atoi(m[1]); n < 1000 {
		t.Fatalf("%s copied %d keys, fewer than the objects created", s1.Name, n)
	}
	backups, _ := filepath.Glob(filepath.Join(s1.DataDir, "server", "db", m[2]+".migrated-*"))
	if len(backups) == 0 {
		t.Fatalf("%s kept no backup of its %s data", s1.Name, m[2])
	}
	// The others were removed from the old cluster: they stop and say how to rejoin.
	for _, s := range others {
		if s == down {
			continue
		}
		code, err := s.WaitExit(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if log := s.CurrentLog(); code == 0 || !strings.Contains(log, "was removed from the") || !strings.Contains(log, "--server") {
			t.Fatalf("%s, removed from the %s cluster: exit %d\n%s", s.Name, m[2], code, s.LogTail(10))
		}
	}
	began = time.Now()
	for _, s := range others {
		s.Start("--server", s1.URL())
		if !strings.Contains(s.CurrentLog(), "is no longer a member of the cluster") {
			t.Fatalf("%s rejoined without moving its old data aside", s.Name)
		}
	}
	c.waitVoters(s1, 3)
	fig.Record(t, "move_to_"+to+"_others_rejoined", time.Since(began))
}

// loseLeader kills the leader, waits for a write through another server, and
// restarts it.
func loseLeader(t *testing.T, c *cluster, fig figures, kind string) {
	t.Helper()
	victim := c.leader(c.Servers[0])
	var other *harness.Server
	for _, s := range c.Servers {
		if s != victim {
			other = s
		}
	}
	fig.Record(t, kind+"_after_move_leader_kill_to_write", killAndWrite(t, victim, other, kind+"-failover-probe"))
	victim.Start()
	c.waitVoters(c.Servers[0], 3)
}

// createMoveObjects creates 1,000 objects labelled move=1: 10 namespaces and,
// in them, 400 ConfigMaps, 300 Secrets, 50 Services, 100 ServiceAccounts and
// 140 Roles.
func createMoveObjects(t *testing.T, s *harness.Server) {
	t.Helper()
	cs := s.Client()
	ctx := context.Background()
	label := map[string]string{"move": "1"}
	meta := func(ns, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: label}
	}
	for i := range 10 {
		ns := &corev1.Namespace{ObjectMeta: meta("", fmt.Sprintf("move-%d", i))}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	creates := map[string]struct {
		n      int
		create func(cs kubernetes.Interface, ns, name string, i int) error
	}{
		"cm": {400, func(cs kubernetes.Interface, ns, name string, i int) error {
			_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta(ns, name),
				Data: map[string]string{"i": strconv.Itoa(i), "text": strings.Repeat("x", i%50)}}, metav1.CreateOptions{})
			return err
		}},
		"secret": {300, func(cs kubernetes.Interface, ns, name string, i int) error {
			_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: meta(ns, name),
				Data: map[string][]byte{"password": []byte(fmt.Sprintf("s3cr3t-%d\x00\xff", i))}}, metav1.CreateOptions{})
			return err
		}},
		"svc": {50, func(cs kubernetes.Interface, ns, name string, i int) error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: meta(ns, name),
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: int32(1000 + i)}}}}, metav1.CreateOptions{})
			return err
		}},
		"sa": {100, func(cs kubernetes.Interface, ns, name string, i int) error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta(ns, name)}, metav1.CreateOptions{})
			return err
		}},
		"role": {140, func(cs kubernetes.Interface, ns, name string, i int) error {
			_, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: meta(ns, name),
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
			return err
		}},
	}
	type job struct {
		kind string
		i    int
	}
	jobs := make(chan job)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				ns, name := fmt.Sprintf("move-%d", j.i%10), fmt.Sprintf("%s-%d", j.kind, j.i)
				if err := creates[j.kind].create(cs, ns, name, j.i); err != nil {
					select {
					case errs <- fmt.Errorf("%s/%s: %w", ns, name, err):
					default:
					}
				}
			}
		}()
	}
	for kind, c := range creates {
		for i := range c.n {
			jobs <- job{kind, i}
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// moveObjects lists the objects labelled move=1 through s with the real
// kubectl: kind/namespace/name → the object as JSON without its resource
// version (revisions restart in the new datastore; content must not change).
func moveObjects(t *testing.T, s *harness.Server) map[string]string {
	t.Helper()
	out, err := s.Kubectl("get", "namespaces,configmaps,secrets,services,serviceaccounts,roles", "-A", "-l", "move=1", "-o", "json")
	if err != nil {
		t.Fatalf("listing through %s: %v", s.Name, err)
	}
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	objs := map[string]string{}
	for _, o := range list.Items {
		meta := o["metadata"].(map[string]any)
		delete(meta, "resourceVersion")
		b, _ := json.Marshal(o)
		objs[fmt.Sprintf("%s/%v/%v", o["kind"], meta["namespace"], meta["name"])] = string(b)
	}
	return objs
}

func compareObjects(t *testing.T, s *harness.Server, want, got map[string]string) {
	t.Helper()
	diffs := 0
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s is missing", s.Name, k)
			diffs++
		} else if g != w {
			t.Errorf("%s: %s differs:\nwant %s\ngot  %s", s.Name, k, w, g)
			diffs++
		}
		if diffs > 5 {
			t.FailNow()
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s lists %d objects, want %d", s.Name, len(got), len(want))
	}
}
