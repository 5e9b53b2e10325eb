package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hakube/hakube/test/harness"
)

// TestAgentSurvivesServerLoss: three servers and an agent that joined
// through server 1; server 1 is SIGKILLed and the agent, through its
// client-side load balancer, stays Ready and runs a new pod. On etcd and on
// Dqlite. The servers run the control plane alone (--disable-agent): four
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
	c.Form(t)
	s1, s2 := c.Servers[0], c.Servers[1]

	a := nw.Hosts[3].Agent(t, "agent-1", s1, s1.TokenFile())
	addTestImage(t, a.Layout().Images())
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
	p := webPod("after-loss", "agent-1", nil)
	created := time.Now()
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := runningPod(t, cs, "default", "after-loss", 2*time.Minute)
	fig.Record(t, "pod_running_after_server_loss", time.Since(created))
	if pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("phase %s", pod.Status.Phase)
	}
}
