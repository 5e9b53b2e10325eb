package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// TestManifests: the manifests in <data-dir>/server/manifests are applied at
// start, a file written or changed while the server runs is applied within
// seconds (a List's items one by one), and a broken file is reported by name
// without holding the others.
func TestManifests(t *testing.T) {
	s := harness.NewServer(t, "server")
	dir := s.Layout().Manifests()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("app.yaml", `apiVersion: v1
kind: Namespace
metadata:
  name: app
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: app
data:
  mode: first
`)
	s.Start()
	cs := s.Client()
	waitData(t, cs, "app", "settings", "mode", "first")

	write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [not, a, name]}\n")
	write("later.json", `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"}, "data": {"k": "v"}}`)
	write("app.yaml", `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: app
data:
  mode: second
`)
	write("list.yaml", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: from-list
  data:
    k: listed
`)
	waitData(t, cs, "default", "later", "k", "v")
	waitData(t, cs, "default", "from-list", "k", "listed")
	waitData(t, cs, "app", "settings", "mode", "second")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.CurrentLog(), filepath.Join(dir, "broken.yaml")) {
		if time.Now().After(deadline) {
			t.Fatalf("the broken manifest is not reported by name:\n%s", s.LogTail(20))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitData waits until a ConfigMap holds key=value.
func waitData(t *testing.T, cs kubernetes.Interface, ns, name, key, value string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && cm.Data[key] == value {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %s/%s has no %s=%s after 30 s (%v, %v)", ns, name, key, value, cm, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
