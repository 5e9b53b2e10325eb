package main

// TestConformanceImages checks bin/test-images/conformance.tar (make conformance-images) without a cluster:
// each image's layers are unpacked in order into a directory, and its entrypoint and the commands the
// [Conformance] specs run in it are run there in a chroot, on the host's network. It needs root, and skips
// when the tarball is missing (MKIMAGE_CONFORMANCE_TAR names another one).

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// image is one unpacked image.
type image struct {
	root   string
	config struct {
		Entrypoint, Cmd, Env []string
		WorkingDir, User     string
	}
}

// unpack applies the image's layers, bottom first, to a new directory, with a /dev of a few nodes, /proc
// mounted, and /etc/hosts and /etc/resolv.conf as the kubelet would provide them.
func unpack(t *testing.T, l layout, name string) *image {
	t.Helper()
	m, c := l.manifest(t, name)
	im := &image{root: t.TempDir()}
	b, _ := json.Marshal(c["config"])
	if err := json.Unmarshal(b, &im.config); err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Layers {
		tr := tar.NewReader(bytes.NewReader(l.blobs[d.Digest]))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(im.root, filepath.FromSlash(h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				if st, err := os.Lstat(p); err != nil || !st.IsDir() {
					os.Remove(p)
					if err := os.Mkdir(p, 0o755); err != nil {
						t.Fatal(err)
					}
				}
			case tar.TypeReg:
				os.Remove(p)
				b, _ := io.ReadAll(tr)
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			case tar.TypeSymlink:
				os.RemoveAll(p)
				if err := os.Symlink(h.Linkname, p); err != nil {
					t.Fatal(err)
				}
				continue
			default:
				t.Fatalf("%s: type %c", h.Name, h.Typeflag)
			}
			if err := syscall.Chmod(p, uint32(h.Mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	dev := filepath.Join(im.root, "dev")
	os.MkdirAll(dev, 0o755)
	for i, n := range []string{"null", "zero", "random", "urandom"} {
		minor := []int{3, 5, 8, 9}[i]
		if err := syscall.Mknod(filepath.Join(dev, n), syscall.S_IFCHR|0o666, 1<<8|minor); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"stdin", "stdout", "stderr"} {
		os.Symlink(fmt.Sprintf("/proc/self/fd/%d", i), filepath.Join(dev, n))
	}
	proc := filepath.Join(im.root, "proc")
	os.MkdirAll(proc, 0o555)
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Fatal(err)
	}
	// Runs before TempDir's removal (cleanups run last first); a proc that stays mounted fails the test.
	t.Cleanup(func() {
		if err := syscall.Unmount(proc, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", proc, err)
		}
	})
	os.MkdirAll(filepath.Join(im.root, "etc"), 0o755)
	os.WriteFile(filepath.Join(im.root, "etc/hosts"), []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"), 0o644)
	os.WriteFile(filepath.Join(im.root, "etc/resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
	return im
}

// syncBuf is an output buffer written by a running process.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// command is args run in the image's chroot with its Env and working directory, as uid:gid cred (nil: root).
func (im *image) command(t *testing.T, cred *syscall.Credential, args ...string) (*exec.Cmd, *syncBuf) {
	t.Helper()
	p := args[0]
	if !strings.Contains(p, "/") {
		path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		for _, e := range im.config.Env {
			if v, ok := strings.CutPrefix(e, "PATH="); ok {
				path = v
			}
		}
		for _, d := range strings.Split(path, ":") {
			if _, err := os.Lstat(filepath.Join(im.root, d, p)); err == nil {
				p = d + "/" + p
				break
			}
		}
		if !strings.Contains(p, "/") {
			t.Fatalf("%s: not found in the image's PATH %s", p, path)
		}
	}
	dir := im.config.WorkingDir
	if dir == "" {
		dir = "/"
	}
	out := &syncBuf{}
	// Its own process group, so that killing it kills its children too (nginx's workers).
	return &exec.Cmd{Path: p, Args: args, Env: im.config.Env, Dir: dir, Stdout: out, Stderr: out, WaitDelay: 3 * time.Second,
		SysProcAttr: &syscall.SysProcAttr{Chroot: im.root, Credential: cred, Setpgid: true}}, out
}

// withEnv is the image with more variables in its environment, as a pod's
// env adds them.
func (im *image) withEnv(vars ...string) *image {
	c := *im
	c.config.Env = append(append([]string{}, im.config.Env...), vars...)
	return &c
}

// run runs a command to its end (10 s at most) and checks that its output contains each of want.
func (im *image) run(t *testing.T, cred *syscall.Credential, wantOK bool, args []string, want ...string) string {
	t.Helper()
	cmd, out := im.command(t, cred, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	timer := time.AfterFunc(10*time.Second, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err := cmd.Wait()
	timer.Stop()
	if wantOK && err != nil {
		t.Errorf("%q: %v: %s", args, err, out)
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("%q: output lacks %q:\n%s", args, w, out)
		}
	}
	t.Logf("ran %q: %s", args, firstLine(out.String()))
	return out.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// start runs a server in the chroot until the test ends.
func (im *image) start(t *testing.T, args ...string) *syncBuf {
	t.Helper()
	cmd, out := im.command(t, nil, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	return out
}

// defaultArgs is what a container of the image runs when a pod sets neither command nor args.
func (im *image) defaultArgs() []string {
	return append(append([]string{}, im.config.Entrypoint...), im.config.Cmd...)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// get polls url until it answers 200 (10 s at most) and returns the body.
func get(t *testing.T, url string, out fmt.Stringer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 {
				t.Logf("GET %s: %s", url, firstLine(string(b)))
				return string(b)
			}
			err = fmt.Errorf("status %s", r.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v; server output:\n%s", url, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor polls a running process' output for s (10 s at most).
func waitFor(t *testing.T, out *syncBuf, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), s); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output:\n%s", s, out)
		}
	}
}

// conformanceTarball is make conformance-images' output (or
// $MKIMAGE_CONFORMANCE_TAR); the test is skipped without it.
func conformanceTarball(t *testing.T) string {
	tarball := os.Getenv("MKIMAGE_CONFORMANCE_TAR")
	if tarball == "" {
		tarball = "../../bin/test-images/conformance.tar"
	}
	if _, err := os.Stat(tarball); err != nil {
		t.Skipf("%v (make conformance-images builds it)", err)
	}
	return tarball
}

func TestConformanceImages(t *testing.T) {
	tarball := conformanceTarball(t)
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	l := readLayout(t, tarball)
	var names []string
	for _, m := range l.manifests {
		names = append(names, m.Annotations["io.containerd.image.name"])
	}
	wantNames := []string{
		"registry.k8s.io/e2e-test-images/agnhost:2.66.1", "registry.k8s.io/e2e-test-images/agnhost:2.55",
		"registry.k8s.io/e2e-test-images/nautilus:1.8", "registry.k8s.io/e2e-test-images/kitten:1.8",
		"registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1", "registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
		"registry.k8s.io/e2e-test-images/busybox:1.37.0-2", "registry.k8s.io/e2e-test-images/nonewprivs:1.4", "registry.k8s.io/pause:3.10.2",
		"registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2", "registry.k8s.io/etcd:3.7.0-0",
	}
	if !reflect.DeepEqual(names, wantNames) {
		t.Fatalf("images %v, want %v", names, wantNames)
	}
	agnhost, _ := l.manifest(t, wantNames[0])
	for _, n := range wantNames[1:6] {
		if m, _ := l.manifest(t, n); m.Layers[0].Digest != agnhost.Layers[0].Digest {
			t.Errorf("%s does not share agnhost's base layer", n)
		}
	}

	for _, v := range []string{"2.66.1", "2.55"} {
		t.Run("agnhost:"+v, func(t *testing.T) {
			im := unpack(t, l, "registry.k8s.io/e2e-test-images/agnhost:"+v)
			if got := im.defaultArgs(); !reflect.DeepEqual(got, []string{"/agnhost", "pause"}) {
				t.Errorf("entrypoint+cmd %q", got)
			}
			out := im.start(t, im.defaultArgs()...)
			waitFor(t, out, "Paused")
			im.run(t, nil, true, []string{"/agnhost", "--version"}, "version "+v)
			im.run(t, nil, true, []string{"/agnhost-2", "entrypoint-tester", "a", "b"}, "/agnhost-2", "entrypoint-tester", "a", "b")
			if v != "2.66.1" {
				return
			}
			im.run(t, nil, true, []string{"sh", "-c", "id"}, "uid=0(root) gid=0(root)")
			im.run(t, nil, true, []string{"id", "user-defined-in-image"}, "uid=1000(user-defined-in-image)", "50000(group-defined-in-image)")
			im.run(t, &syscall.Credential{Uid: 1000, Gid: 1000}, true, []string{"sh", "-c", "id -u; touch /tmp/x && echo written"}, "1000", "written")
			im.run(t, nil, true, []string{"sh", "-c", "stat -c %a /tmp; test -d /uploads && test -s /localhost.crt && test -s /localhost.key && readlink /agnhost-2"}, "1777", "agnhost")
			im.run(t, nil, true, []string{"bash", "-c", "[[ 1 == 1 ]] && echo bash-ok"}, "bash-ok")
			im.withEnv("data-1=value-1").run(t, nil, true, []string{"sh", "-c", "env"}, "data-1=value-1")
			im.run(t, nil, true, []string{"curl", "--version"}, "curl 7.88.1")
			im.run(t, nil, false, []string{"nc", "-h"}, "OpenBSD netcat")
			im.run(t, nil, true, []string{"ss", "-ant46"}, "State")
			im.run(t, nil, true, []string{"dig", "-v"}, "DiG 9.18")
			im.run(t, nil, true, []string{"nslookup", "-version"}, "nslookup 9.18")
			im.run(t, nil, true, []string{"getent", "hosts", "localhost"}, "localhost")
			im.run(t, nil, true, []string{"seq", "1", "3"}, "1\n2\n3")
			im.run(t, nil, true, []string{"ip", "-V"}, "iproute2")
			port := freePort(t)
			srv := im.start(t, "/agnhost", "netexec", fmt.Sprintf("--http-port=%d", port), fmt.Sprintf("--udp-port=%d", freePort(t)))
			get(t, fmt.Sprintf("http://127.0.0.1:%d/hostname", port), srv)
			im.run(t, nil, true, []string{"sh", "-c", fmt.Sprintf("curl -s http://127.0.0.1:%d/echo?msg=curl-ok", port)}, "curl-ok")
			// GNU wget: the flags of Alpine's busybox wget that the specs use.
			im.run(t, nil, true, []string{"wget", "--version"}, "GNU Wget")
			im.run(t, nil, true, []string{"sh", "-c", fmt.Sprintf("wget -q -O - -T 2 http://127.0.0.1:%d/echo?msg=wget-ok", port)}, "wget-ok")
			im.run(t, nil, true, []string{"sh", "-c", fmt.Sprintf("echo hostName | nc -w 1 -u 127.0.0.1 %d >/dev/null; nc -v -z -w 1 127.0.0.1 %d 2>&1", port, port)}, "succeeded")
		})
	}

	for _, x := range []string{"nautilus", "kitten"} {
		t.Run(x, func(t *testing.T) {
			im := unpack(t, l, "registry.k8s.io/e2e-test-images/"+x+":1.8")
			if got := im.defaultArgs(); !reflect.DeepEqual(got, []string{"/agnhost", "test-webserver"}) {
				t.Errorf("entrypoint+cmd %q", got)
			}
			port := freePort(t)
			out := im.start(t, append(im.defaultArgs(), fmt.Sprintf("--port=%d", port))...)
			if b := get(t, fmt.Sprintf("http://127.0.0.1:%d/data.json", port), out); !strings.Contains(b, x+".jpg") {
				t.Errorf("data.json %q lacks %s.jpg", b, x)
			}
			get(t, fmt.Sprintf("http://127.0.0.1:%d/%s.jpg", port, x), out)
		})
	}

	t.Run("glibc-dns-testing", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1")
		im.run(t, nil, true, []string{"sh", "-c", "for i in `seq 1 3`; do echo try-$i; done"}, "try-3")
		im.run(t, nil, true, []string{"getent", "hosts", "localhost"}, "localhost")
		im.run(t, nil, true, []string{"bash", "-c", "echo bash-ok"}, "bash-ok")
		coredns, err := filepath.Abs("../../bin/image-bin/coredns")
		if _, serr := os.Stat(coredns); err != nil || serr != nil {
			im.run(t, nil, true, []string{"dig", "-v"}, "DiG 9.18")
			t.Log("no bin/image-bin/coredns: dig not run against a server")
			return
		}
		port := freePort(t)
		dir := t.TempDir()
		corefile := fmt.Sprintf(".:%d {\n  bind 127.0.0.1\n  hosts {\n    10.9.8.7 probe.example.test\n  }\n}\n", port)
		os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644)
		cmd := exec.Command(coredns, "-conf", filepath.Join(dir, "Corefile"))
		var out syncBuf
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitFor(t, &out, "CoreDNS")
		for _, proto := range []string{"+notcp", "+tcp"} {
			im.run(t, nil, true, []string{"dig", proto, "+noall", "+answer", "+search", "-p", fmt.Sprint(port), "@127.0.0.1", "probe.example.test", "A"}, "10.9.8.7")
		}
	})

	t.Run("nginx", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/e2e-test-images/nginx:1.27.0-2")
		if got := im.defaultArgs(); !reflect.DeepEqual(got, []string{"nginx", "-g", "daemon off;"}) {
			t.Errorf("entrypoint+cmd %q", got)
		}
		im.run(t, nil, true, []string{"nginx", "-t"}, "syntax is ok", "test is successful")
		conf, err := os.ReadFile(filepath.Join(im.root, "etc/nginx/nginx.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(conf), "listen 80;") {
			t.Fatalf("nginx.conf does not listen on 80:\n%s", conf)
		}
		port := freePort(t)
		conf = []byte(strings.NewReplacer("listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port), "listen [::]:80;", "").Replace(string(conf)))
		os.WriteFile(filepath.Join(im.root, "etc/nginx/test.conf"), conf, 0o644)
		out := im.start(t, "nginx", "-c", "/etc/nginx/test.conf", "-g", "daemon off;")
		if b := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port), out); !strings.Contains(b, "Welcome to nginx!") {
			t.Errorf("page %q", b)
		}
	})

	t.Run("busybox", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/e2e-test-images/busybox:1.37.0-2")
		if got := im.defaultArgs(); !reflect.DeepEqual(got, []string{"sh"}) {
			t.Errorf("entrypoint+cmd %q", got)
		}
		im.run(t, &syscall.Credential{Uid: 1001, Gid: 2002}, true, []string{"sh", "-c", "id; echo x > /tmp/f && cat /tmp/f"}, "uid=1001 gid=2002", "x")
		im.run(t, nil, true, []string{"sh", "-c", "[[ 1 == 1 ]] && echo ok; stat -c %a /tmp; ls /bin | wc -l; echo abc | hexdump -C | head -1; env | grep -c PATH; hostname"}, "ok", "1777", "61 62 63")
		im.run(t, nil, false, []string{"wget", "--help"}, "--post-data")
		// Upstream's busybox (the official image's): its messages are compared by specs.
		im.run(t, nil, false, []string{"busybox"}, "BusyBox v1.37.0")
		im.run(t, nil, false, []string{"/bin/sh", "-c", "echo test > /nonexistent/file"}, "/bin/sh: can't create /nonexistent/file:")
		// The prestop spec's call.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
		})}
		go srv.Serve(l)
		defer srv.Close()
		im.run(t, nil, true, []string{"wget", "-O-", "--post-data=prestop", "http://" + l.Addr().String() + "/write"}, "POST /write prestop")
		im.run(t, nil, true, []string{"sh", "-c", "readlink /bin/sleep"}, "busybox")
		im.run(t, nil, true, []string{"/bin/sysctl", "-n", "kernel.ostype"}, "Linux")
		// The EnvFrom specs' names are no shell names: sh must pass them on.
		im.withEnv("data-1=value-1").run(t, nil, true, []string{"sh", "-c", "env"}, "data-1=value-1")
	})

	t.Run("nonewprivs", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/e2e-test-images/nonewprivs:1.4")
		// setuid root: a user's nnp runs as root unless no_new_privs is set (allowPrivilegeEscalation: false).
		im.run(t, &syscall.Credential{Uid: 1000, Gid: 1000}, true, im.defaultArgs(), "Effective uid: 0")
	})
	t.Run("pause", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/pause:3.10.2")
		cmd, out := im.command(t, nil, im.defaultArgs()...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Fatalf("pause exited: %v: %s", err, out)
		case <-time.After(time.Second):
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			t.Log("pause ran until SIGTERM")
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatal("pause ignored SIGTERM")
		}
	})

	t.Run("sample-apiserver", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2")
		if got := im.defaultArgs(); !reflect.DeepEqual(got, []string{"/sample-apiserver"}) {
			t.Errorf("entrypoint+cmd %q", got)
		}
		im.run(t, nil, true, []string{"/sample-apiserver", "--help"}, "--etcd-servers", "--tls-cert-file", "--tls-private-key-file",
			"--audit-log-path", "--audit-log-maxage", "--audit-log-maxbackup", "--secure-port int")
	})

	t.Run("etcd", func(t *testing.T) {
		im := unpack(t, l, "registry.k8s.io/etcd:3.7.0-0")
		im.run(t, nil, true, []string{"/usr/local/bin/etcd", "--version"}, "etcd Version: 3.7.3")
		im.run(t, nil, true, []string{"/usr/local/bin/etcdctl", "version"}, "etcdctl version: 3.7.3")
		c, p := freePort(t), freePort(t)
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", c), fmt.Sprintf("http://127.0.0.1:%d", p)
		out := im.start(t, "/usr/local/bin/etcd", "--data-dir=/tmp/etcd", "--listen-client-urls="+client, "--advertise-client-urls="+client,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=default="+peer)
		if b := get(t, client+"/health", out); !strings.Contains(b, `"health":"true"`) {
			t.Errorf("/health %s", b)
		}
	})
}
