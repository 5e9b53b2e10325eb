package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// KwokAnnotation marks the nodes kwok simulates; KwokTaint keeps every other
// pod off them.
const (
	KwokAnnotation = "kwok.x-k8s.io/node"
	KwokTaint      = "kwok.x-k8s.io/node"
)

// kwokStages is how kwok plays the kubelets of its nodes: a node it manages
// becomes Ready at once (kwok renews its lease from then on); a pod bound to
// one runs at once with an IP from the node's pod CIDR; a pod being deleted
// goes, as a kubelet confirms its deletion.
const kwokStages = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: hakube-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok plays this node's kubelet
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      capacity: {cpu: "32", memory: 256Gi, pods: "110"}
      allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: kwok
        containerRuntimeVersion: kwok
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: hakube-pod-running
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Pending]
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $ip := PodIPWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace }}
      phase: Running
      startTime: {{ $now | Quote }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ $ip | Quote }}
      podIPs:
      - ip: {{ $ip | Quote }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: hakube-pod-gone
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
  next:
    delete: true
`

// StartKwok runs kwok (sigs.k8s.io/kwok) on s's host against s's apiserver,
// playing the kubelets of the nodes annotated KwokAnnotation=fake. The binary
// is $HAKUBE_KWOK ('make bench-scale' builds it).
func StartKwok(t testing.TB, s *Server) *Process {
	t.Helper()
	bin := os.Getenv("HAKUBE_KWOK")
	if bin == "" {
		t.Fatal("set HAKUBE_KWOK to the kwok binary ('make bench-scale' builds it into bin/)")
	}
	dir := t.TempDir()
	stages := filepath.Join(dir, "stages.yaml")
	if err := os.WriteFile(stages, []byte(kwokStages), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newProcess(t, "kwok", filepath.Join(dir, "kwok.log"))
	p.bin, p.Wrap, p.readyTimeout = bin, s.Wrap, time.Minute
	p.ReadyLine = `"msg":"Watch nodes"` // its controllers start next; the nodes' readiness is the real check
	p.Args = []string{"--kubeconfig", s.Kubeconfig, "--master", s.URL(), "--config", stages,
		"--manage-nodes-with-annotation-selector", KwokAnnotation + "=fake", "--node-lease-duration-seconds", "40",
		"--server-address", "127.0.0.1:10247"}
	p.Start()
	return p
}
