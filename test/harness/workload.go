package harness

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// TestImage is the workload image (agnhost, built by make into
// bin/test-images), which a test puts in a node's agent/images.
const TestImage = "docker.io/hakube/agnhost:2.66"

// AddTestImage copies the test image into a node's image directory, as a
// user puts an image there before the node starts: as .tar, .tar.gz or
// .tar.zst.
func AddTestImage(t testing.TB, dir string, ext ...string) {
	t.Helper()
	suffix := ".tar"
	if len(ext) > 0 {
		suffix = ext[0]
	}
	src := filepath.Join(filepath.Dir(Binary(t)), "test-images", "agnhost.tar")
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("the test image (make build puts it there): %v", err)
	}
	defer in.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "agnhost"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out io.WriteCloser
	switch suffix {
	case ".tar":
		out = f
	case ".tar.gz":
		out = gzip.NewWriter(f)
	case ".tar.zst":
		if out, err = zstd.NewWriter(f); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("no image tarball is %s", suffix)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// WebPod is an agnhost HTTP server on port 8080, on node (if not empty).
func WebPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "web", Image: TestImage, ImagePullPolicy: corev1.PullNever,
				Args:  []string{"netexec", "--http-port=8080"},
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
			}},
		},
	}
}

// PodStartup creates n pods from the local test image at once, in the
// default namespace, and returns each one's startup latency as Kubernetes'
// SLO defines it: from its creation until a watch sees it Running. The pods
// are deleted again, and gone from the API, when it returns.
func PodStartup(t testing.TB, cs kubernetes.Interface, n int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const selector = "app=startup-latency"
	pods := cs.CoreV1().Pods("default")
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	created := map[string]time.Time{}
	for i := range n {
		p := WebPod(fmt.Sprintf("startup-%d", i), "", map[string]string{"app": "startup-latency"})
		p.Spec.Containers[0].ReadinessProbe = nil
		created[p.Name] = time.Now()
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var lat []time.Duration
	running := map[string]bool{}
	for len(running) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the pods' watch ended with %d of %d running", len(running), n)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted || p.Status.Phase != corev1.PodRunning || running[p.Name] {
				continue
			}
			running[p.Name] = true
			lat = append(lat, time.Since(created[p.Name]))
		case <-ctx.Done():
			t.Fatalf("%d of %d pods running after 5 minutes", len(running), n)
		}
	}
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector}); err != nil {
		t.Fatal(err)
	}
	WaitFor(ctx, t, 2*time.Minute, "the startup-latency pods gone", func() error {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(l.Items) > 0 {
			err = fmt.Errorf("%d left", len(l.Items))
		}
		return err
	})
	return lat
}
