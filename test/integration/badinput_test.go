package integration

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/test/harness"
)

// TestBadInput: each case exits non-zero, says what is wrong, and leaves no
// data dir behind.
func TestBadInput(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		return strconv.Itoa(p)
	}
	busy, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	// The apiserver's loopback port is the listen port + 1.
	busyInternal, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyInternal.Close()
	belowBusyInternal := strconv.Itoa(busyInternal.Addr().(*net.TCPAddr).Port - 1)

	fileAsParent := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(fileAsParent, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"data dir under a file", []string{"--data-dir", filepath.Join(fileAsParent, "data")}, "is not a directory"},
		{"relative data dir", []string{"--data-dir", "relative/dir"}, "must be an absolute path"},
		{"port in use", []string{"--https-listen-port", busyPort}, "address already in use"},
		{"internal port in use", []string{"--https-listen-port", belowBusyInternal}, "internal apiserver port"},
		{"malformed full token", []string{"--token", "K10abc::server:secret"}, "malformed token"},
		{"token with spaces", []string{"--token", "two words"}, "malformed token"},
		{"token file missing", []string{"--token-file", "/nonexistent/token"}, "--token-file"},
		{"unsupported datastore scheme", []string{"--datastore-endpoint", "redis://localhost:6379"}, "unsupported datastore endpoint scheme"},
		{"datastore without host", []string{"--datastore-endpoint", "postgres:///kube"}, "has no host"},
		{"bad etcd endpoint", []string{"--datastore-endpoint", "https://etcd:2379/path"}, "malformed etcd endpoint"},
		{"unreachable postgres", []string{"--datastore-endpoint", "postgres://u:p@127.0.0.1:" + closedPort() + "/kube"}, "cannot reach the datastore"},
		{"unreachable etcd", []string{"--datastore-endpoint", "https://127.0.0.1:" + closedPort()}, "cannot reach any etcd endpoint"},
		{"unknown datastore", []string{"--datastore", "mongodb"}, "use etcd (the default with --cluster-init), dqlite, or sqlite"},
		{"sqlite datastore with cluster-init", []string{"--cluster-init", "--datastore=sqlite"}, "--datastore=sqlite is a single server's datastore"},
		{"dqlite datastore without cluster-init", []string{"--datastore=dqlite"}, "--datastore=dqlite goes with --cluster-init"},
		{"bad snapshot schedule", []string{"--etcd-snapshot-schedule-cron", "every noon"}, "--etcd-snapshot-schedule-cron"},
		{"zero snapshot retention", []string{"--etcd-snapshot-retention", "0"}, "keep at least 1 snapshot"},
		{"restore path without cluster-reset", []string{"--cluster-reset-restore-path", "/tmp/snap.db"}, "goes with --cluster-reset"},
		{"cluster-reset with server", []string{"--cluster-reset", "--server", "https://10.0.0.1:6443", "--token", "abc"}, "does not go with --server"},
		{"cluster-reset without data", []string{"--cluster-reset"}, "needs this server's embedded etcd or Dqlite data"},
		{"restore without token", []string{"--cluster-reset", "--cluster-reset-restore-path", "/tmp/snap.db"}, "needs the token"},
		{"restore of a missing snapshot", []string{"--cluster-reset", "--cluster-reset-restore-path", "/nonexistent/snap.db", "--token", "abc"}, "no snapshot file"},
		{"s3 without bucket", []string{"--etcd-s3"}, "--etcd-s3 needs --etcd-s3-bucket"},
		{"s3 endpoint with scheme", []string{"--etcd-s3", "--etcd-s3-bucket=b", "--etcd-s3-endpoint=https://s3.example.com"}, "without a scheme"},
		{"unknown etcd arg", []string{"--etcd-arg", "no-such-setting=1"}, "unknown field"},
		{"bad service cidr", []string{"--service-cidr", "10.43.0.0/99"}, "--service-cidr"},
		{"dns outside service cidr", []string{"--cluster-dns", "192.168.1.10"}, "outside --service-cidr"},
		{"encryption config passed through", []string{"--secrets-encryption", "--kube-apiserver-arg=encryption-provider-config=/tmp/e.yaml"}, "use --secrets-encryption"},
		{"overlapping cidrs", []string{"--cluster-cidr", "10.43.0.0/16"}, "overlap"},
		{"bad kubeconfig mode", []string{"--write-kubeconfig-mode", "rw"}, "octal"},
		{"bad node ip", []string{"--node-ip", "not-an-ip"}, "--node-ip"},
		{"stray argument", []string{"extra"}, "unknown command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dataDir := filepath.Join(dir, "data")
			args := []string{"server", "--data-dir", dataDir, "--write-kubeconfig", filepath.Join(dir, "kubeconfig"),
				"--https-listen-port", strconv.Itoa(harness.FreePortPair(t))}
			args = append(args, tc.args...)
			began := time.Now()
			out, code := harness.RunHakube(t, nil, args...)
			if code == 0 {
				t.Fatalf("exit code 0, want failure; output:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output does not say %q:\n%s", tc.want, out)
			}
			if !strings.Contains(out, "hakube: error:") {
				t.Fatalf("no error line in output:\n%s", out)
			}
			if _, err := os.Stat(dataDir); err == nil {
				t.Fatalf("data dir %s was created by a failed start", dataDir)
			}
			if _, err := os.Stat(filepath.Join(dir, "kubeconfig")); err == nil {
				t.Fatal("kubeconfig was written by a failed start")
			}
			if d := time.Since(began); d > 30*time.Second {
				t.Fatalf("took %s to fail", d)
			}
		})
	}
}

// TestLateBadInput: a setting the controller manager refuses is found only
// after the datastore and apiserver started (the data dir then stays, complete,
// for a corrected start), but the server still fails instead of saying ready.
func TestLateBadInput(t *testing.T) {
	dir := t.TempDir()
	out, code := harness.RunHakube(t, nil, "server", "--data-dir", filepath.Join(dir, "data"), "--write-kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--https-listen-port", strconv.Itoa(harness.FreePortPair(t)), "--disable-agent", "--kube-controller-manager-arg", "controllers=no-such-controller")
	want := `"no-such-controller" is not in the list of known controllers`
	if code == 0 || !strings.Contains(out, want) || !strings.Contains(out, "hakube: error:") {
		t.Fatalf("exit %d, want a failure saying %q:\n%s", code, want, out)
	}
	if strings.Contains(out, "hakube is ready") {
		t.Fatalf("the server said it was ready before failing:\n%s", out)
	}
}

// TestCertificateRotateBadInput: 'certificate rotate' names what is wrong
// and writes nothing.
func TestCertificateRotateBadInput(t *testing.T) {
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--service", "kube-dns"}, `--service "kube-dns" is not a service with certificates; give one of admin, dqlite, etcd, flannel,`},
		{nil, "no certificates in " + empty + "/server/tls or " + empty + "/agent/tls: is --data-dir the data directory of a server or agent?"},
		{[]string{"--service", "etcd"}, "no certificates in"},
	} {
		out, code := harness.RunHakube(t, nil, append([]string{"certificate", "rotate", "--data-dir", empty}, c.args...)...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want a failure saying %q:\n%s", c.args, code, c.want, out)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("a failed rotate wrote %v", entries)
	}
	// A server refuses a validity too short for renewal to work.
	out, code := harness.RunHakube(t, []string{"HAKUBE_CERT_VALIDITY=10s"}, "server", "--data-dir", filepath.Join(empty, "data"))
	if code == 0 || !strings.Contains(out, `HAKUBE_CERT_VALIDITY="10s": give a duration of at least 1m0s`) || exists(filepath.Join(empty, "data")) {
		t.Fatalf("a 10s validity: exit %d\n%s", code, out)
	}
}

// TestTokenRotateBadInput: 'token rotate' and 'certificate rotate-ca' name
// what is wrong and write nothing. (With a server, the e2e and nodes tests
// check the rest.)
func TestTokenRotateBadInput(t *testing.T) {
	empty := t.TempDir()
	withCA := t.TempDir()
	tlsDir := layout.New(withCA).TLS()
	if err := tlsDir.EnsureCAs(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(filepath.Join(withCA, "server"))
	for _, c := range []struct {
		dir  string
		args []string
		want string
	}{
		{empty, nil, "--new-token is required"},
		{empty, []string{"--new-token", "two words"}, "malformed --new-token"},
		{empty, []string{"--new-token", "new-secret"}, "is --data-dir a server's data directory?"},
		{withCA, []string{"--new-token", "K10" + strings.Repeat("0", 64) + "::server:new-secret"}, "--new-token's CA hash is not this cluster's"},
		{withCA, []string{"--new-token", "new-secret"}, "reading this server's token"},
	} {
		out, code := harness.RunHakube(t, nil, append([]string{"token", "rotate", "--data-dir", c.dir}, c.args...)...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want a failure saying %q:\n%s", c.args, code, c.want, out)
		}
	}
	// rotate-ca: on what is no server, and on a server whose token is gone.
	for dir, want := range map[string]string{empty: "run this on a server, with its --data-dir", withCA: "reading this server's token"} {
		if out, code := harness.RunHakube(t, nil, "certificate", "rotate-ca", "--data-dir", dir); code == 0 || !strings.Contains(out, want) {
			t.Errorf("rotate-ca in %s: exit %d, want a failure saying %q:\n%s", dir, code, want, out)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("a failed rotate wrote %v", entries)
	}
	if after, _ := os.ReadDir(filepath.Join(withCA, "server")); len(after) != len(before) {
		t.Fatalf("a failed rotate wrote into %s: %v", withCA, after)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestEmbeddedKubectlAndHelp covers the thin CLI: help, version and the embedded kubectl.
func TestEmbeddedKubectlAndHelp(t *testing.T) {
	out, code := harness.RunHakube(t, nil, "--version")
	if code != 0 || !strings.Contains(out, "hakube version") || !strings.Contains(out, "kubernetes v1.37") {
		t.Fatalf("--version: %d %s", code, out)
	}
	out, code = harness.RunHakube(t, nil, "server", "--help")
	if code != 0 || !strings.Contains(out, "--datastore-endpoint") || !strings.Contains(out, "K3S_TOKEN") {
		t.Fatalf("server --help: %d %s", code, out)
	}
	s := harness.NewServer(t, "server")
	s.Start()
	out, code = harness.RunHakube(t, nil, "kubectl", "--kubeconfig", s.Kubeconfig, "get", "namespace", "kube-system", "-o", "name")
	if code != 0 || strings.TrimSpace(out) != "namespace/kube-system" {
		t.Fatalf("hakube kubectl: %d %s", code, out)
	}
}

// TestCheckConfig: 'hakube check-config' lists every check, exits 1 exactly
// when something required is missing, and names the fix; without iptables on
// PATH it says so.
func TestCheckConfig(t *testing.T) {
	out, code := harness.RunHakube(t, nil, "check-config")
	for _, name := range []string{"root", "cgroups", "overlay", "br_netfilter", "vxlan", "iptables", "conntrack", "swap", "ip_forward"} {
		if !strings.Contains(out, "\n"+name+" ") {
			t.Errorf("check %s not listed:\n%s", name, out)
		}
	}
	if missing := strings.Contains(out, " missing "); missing != (code == 1) || (code != 0 && code != 1) {
		t.Fatalf("exit %d with missing=%v:\n%s", code, missing, out)
	}
	out, code = harness.RunHakube(t, []string{"PATH=/nonexistent"}, "check-config")
	if code != 1 || !regexp.MustCompile(`iptables +missing +iptables not found on PATH`).MatchString(out) || !strings.Contains(out, "fix: apt-get install iptables") {
		t.Fatalf("without iptables on PATH: exit %d\n%s", code, out)
	}
}
