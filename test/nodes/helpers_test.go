package nodes

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/test/harness"
)

// testImage is the workload image (agnhost, built by make into
// bin/test-images), which a test puts in a node's agent/images.
const testImage = "docker.io/hakube/agnhost:2.66"

// addTestImage copies the test image into a node's image directory, as a
// user puts an image there before the node starts: as .tar, .tar.gz or
// .tar.zst.
func addTestImage(t *testing.T, dir string, ext ...string) {
	t.Helper()
	suffix := ".tar"
	if len(ext) > 0 {
		suffix = ext[0]
	}
	src := filepath.Join(filepath.Dir(harness.Binary(t)), "test-images", "agnhost.tar")
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

// waitFor polls cond until it returns nil, failing the test with its last
// error after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	harness.WaitFor(context.Background(), t, timeout, what, cond)
}

// webPod is an agnhost HTTP server on port 8080, on node (if not empty).
func webPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "web", Image: testImage, ImagePullPolicy: corev1.PullNever,
				Args:  []string{"netexec", "--http-port=8080"},
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
			}},
		},
	}
}

// runningPod waits until the pod is Running and Ready and returns it.
func runningPod(t *testing.T, cs kubernetes.Interface, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, timeout, "pod "+name+" running and ready", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s %s", p.Status.Phase, podWhy(p))
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				pod = p
				return nil
			}
		}
		return fmt.Errorf("not ready %s", podWhy(p))
	})
	return pod
}

// podWhy is what the pod's containers wait for.
func podWhy(p *corev1.Pod) string {
	var out []string
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			out = append(out, string(c.Type)+": "+c.Message)
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			out = append(out, s.Name+": "+s.State.Waiting.Reason+" "+s.State.Waiting.Message)
		}
	}
	return strings.Join(out, "; ")
}

// rssMB is the resident memory of one process (hakube's own: containerd and
// the containers are other processes).
func rssMB(t *testing.T, pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Log(err)
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p+0.999999) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}
