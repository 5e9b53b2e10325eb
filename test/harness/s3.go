package harness

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// S3 is a real S3-compatible server (versitygw with its POSIX backend) with
// one bucket, started by a test.
type S3 struct {
	Endpoint, Bucket, AccessKey, SecretKey string
	// Dir holds the buckets: Dir/<bucket>/<object key>.
	Dir string
}

// StartS3 runs versitygw on host:port, inside the namespace of wrap (nil for
// this one). The binary is $HAKUBE_VERSITYGW ('make e2e' builds it), else
// versitygw on PATH.
func StartS3(t testing.TB, wrap []string, host string, port int) *S3 {
	t.Helper()
	bin := os.Getenv("HAKUBE_VERSITYGW")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("versitygw"); err != nil {
			t.Fatal("versitygw not found: 'make e2e' builds it into bin/ (or set HAKUBE_VERSITYGW)")
		}
	}
	dir := t.TempDir()
	s := &S3{Endpoint: net.JoinHostPort(host, strconv.Itoa(port)), Bucket: "snapshots", AccessKey: "hakube-test",
		SecretKey: "hakube-test-secret", Dir: filepath.Join(dir, "data")}
	for _, d := range []string{filepath.Join(s.Dir, s.Bucket), filepath.Join(dir, "meta")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	log, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, wrap...), bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.Endpoint,
		"posix", "--sidecar", filepath.Join(dir, "meta"), s.Dir)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(log.Name())
		if strings.Contains(string(b), "listening on") {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Flags are the hakube flags that use this store.
func (s *S3) Flags() []string {
	return []string{"--etcd-s3", "--etcd-s3-endpoint=" + s.Endpoint, "--etcd-s3-bucket=" + s.Bucket, "--etcd-s3-folder=cluster-a",
		"--etcd-s3-access-key=" + s.AccessKey, "--etcd-s3-secret-key=" + s.SecretKey, "--etcd-s3-insecure"}
}
