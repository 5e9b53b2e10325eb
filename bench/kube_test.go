package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/test/harness"
)

// sloP99ms is the Kubernetes API latency SLO for mutating calls (p99 ≤ 1 s).
const sloP99ms = 1000

// kubeWorkloads are ConfigMap create, get, list and update through the
// server's apiserver (behind its supervisor) with one client-go client shared
// by the workers, as a controller's would be; 1 KiB of data per object.
func kubeWorkloads(t *testing.T, s *harness.Server, pool int) []workload {
	cms := kubeClient(t, s).CoreV1().ConfigMaps("default")
	data := map[string]string{"v": strings.Repeat("x", 1024)}
	for i := range pool {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool-%d", i)}, Data: data}
		if _, err := cms.Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating the pool: %v", err)
		}
	}
	var created atomic.Int64 // names stay unique across the runs at 1 and 16 workers
	create := func(ctx context.Context, _ int) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("new-%d", created.Add(1))}, Data: data}
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		return err
	}
	get := func(ctx context.Context, i int) error {
		_, err := cms.Get(ctx, fmt.Sprintf("pool-%d", i%pool), metav1.GetOptions{})
		return err
	}
	list := func(ctx context.Context, _ int) error {
		_, err := cms.List(ctx, metav1.ListOptions{Limit: 100})
		return err
	}
	update := func(ctx context.Context, i int) error {
		patch := fmt.Sprintf(`{"data":{"n":"%d"}}`, i)
		_, err := cms.Patch(ctx, fmt.Sprintf("pool-%d", i%pool), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
	var ws []workload
	for _, n := range []int{1, 16} {
		ws = append(ws, workload{"k8s-create", n, create}, workload{"k8s-get", n, get},
			workload{"k8s-list-100", n, list}, workload{"k8s-update", n, update})
	}
	return ws
}

// restConfig reaches s's apiserver with no client-side rate limit: the
// server is what is measured.
func restConfig(t *testing.T, s *harness.Server) *rest.Config {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host, cfg.Dial, cfg.QPS = s.URL(), s.Dial, -1
	return cfg
}

// mutating reports whether a workload changes objects (the SLO's kind).
func mutating(workload string) bool { return workload == "k8s-create" || workload == "k8s-update" }
