package harness

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	p := newProcess(t, "versitygw", filepath.Join(dir, "versitygw.log"))
	p.bin, p.Wrap, p.ReadyLine, p.readyTimeout = bin, wrap, "listening on", 30*time.Second
	p.Args = []string{"--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.Endpoint,
		"posix", "--sidecar", filepath.Join(dir, "meta"), s.Dir}
	p.Start()
	return s
}

// Flags are the hakube flags that use this store.
func (s *S3) Flags() []string {
	return []string{"--etcd-s3", "--etcd-s3-endpoint=" + s.Endpoint, "--etcd-s3-bucket=" + s.Bucket, "--etcd-s3-folder=cluster-a",
		"--etcd-s3-access-key=" + s.AccessKey, "--etcd-s3-secret-key=" + s.SecretKey, "--etcd-s3-insecure"}
}
