package install

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// source is a directory laid out as 'make build' leaves bin/: the binary
// (here a script) and part of the node bundle.
func source(t *testing.T) string {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"hakube": 0o755, "runc": 0o755, "cni/bridge": 0o755, "images/pause.tar": 0o644} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n# "+name+"\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// verify runs systemd's own checker on the unit under root, with systemd's
// units copied in (the targets the unit names). A directive systemd would
// ignore is only a warning to it: any output fails the test.
func verify(t *testing.T, root, unit string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is needed (apt-get install systemd; 'make test' installs it)")
	}
	units := filepath.Join(root, "usr/lib/systemd")
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", units).CombinedOutput(); err != nil {
		t.Fatalf("copying systemd's units: %v: %s", err, out)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--root="+root, filepath.Join(unitDir, unit)).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

func TestInstallWritesAServiceSystemdAccepts(t *testing.T) {
	root := t.TempDir()
	c := Config{Role: "server", Root: root, Source: source(t), Token: "s3cret",
		Args: []string{"--cluster-init", "--node-label", "zone=lab a", "--data-dir", "/srv/hakube%1", "--node-taint", "x=$HOME:NoSchedule"}}
	if err := Install(c, io.Discard); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(root, unitDir, "hakube.service"))
	if err != nil {
		t.Fatal(err)
	}
	want := `ExecStart=/usr/local/lib/hakube/hakube server --cluster-init --node-label "zone=lab a" --data-dir /srv/hakube%%1 --node-taint x=$$HOME:NoSchedule` + "\n"
	if !strings.Contains(string(unit), want) {
		t.Fatalf("the unit lacks %q:\n%s", want, unit)
	}
	for _, line := range []string{"Type=notify\n", "Restart=always\n", "KillMode=process\n", "Delegate=yes\n", "LimitNOFILE=1048576\n", "TasksMax=infinity\n",
		"EnvironmentFile=-/etc/systemd/system/hakube.service.env\n", "WantedBy=multi-user.target\n"} {
		if !strings.Contains(string(unit), line) {
			t.Errorf("the unit lacks %q", line)
		}
	}
	if strings.Contains(string(unit), "s3cret") {
		t.Fatal("the token is in the unit, which every user can read")
	}
	env := filepath.Join(root, unitDir, "hakube.service.env")
	st, err := os.Stat(env)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(env); st.Mode().Perm() != 0o600 || !strings.Contains(string(b), "HAKUBE_TOKEN=s3cret\n") {
		t.Fatalf("environment file mode %v, content %q", st.Mode().Perm(), b)
	}
	for _, p := range []string{"hakube", "runc", "cni/bridge", "images/pause.tar"} {
		if _, err := os.Stat(filepath.Join(root, libDir, p)); err != nil {
			t.Error(err)
		}
	}
	if dest, err := os.Readlink(filepath.Join(root, binLink)); err != nil || dest != "/usr/local/lib/hakube/hakube" {
		t.Fatalf("link %q, %v", dest, err)
	}
	if got := DataDirs(root); len(got) != 1 || got[0] != "/srv/hakube%1" {
		t.Fatalf("DataDirs %q, want [/srv/hakube%%1]", got)
	}
	verify(t, root, "hakube.service")

	// Installed again from the installed binary: new flags, the same bundle.
	c.Source, c.Args = filepath.Join(root, libDir), []string{"--server", "https://10.0.0.1:6443"}
	if err := Install(c, io.Discard); err != nil {
		t.Fatal(err)
	}
	if unit, _ := os.ReadFile(filepath.Join(root, unitDir, "hakube.service")); !strings.Contains(string(unit), "hakube server --server https://10.0.0.1:6443\n") {
		t.Fatalf("reinstalled unit:\n%s", unit)
	}
}

func TestInstallRefusesBadInputAndWritesNothing(t *testing.T) {
	src := source(t)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Role: "master", Source: src}, "give server or agent"},
		{Config{Role: "agent", Source: src, Args: []string{"--server", "https://10.0.0.1:6443"}}, "an agent needs the cluster's token"},
		{Config{Role: "server", Source: t.TempDir()}, "the binary to install"},
	} {
		root := t.TempDir()
		c.cfg.Root = root
		err := Install(c.cfg, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("Install(%s) = %v, want %q", c.cfg.Role, err, c.want)
		}
		if left, _ := os.ReadDir(root); len(left) > 0 {
			t.Fatalf("Install(%s) failed but left %v", c.cfg.Role, left)
		}
	}
}

func TestUninstallRemovesWhatInstallWrote(t *testing.T) {
	root := t.TempDir()
	c := Config{Role: "agent", Root: root, Source: source(t), Token: "s3cret", Args: []string{"--server", "https://10.0.0.1:6443", "--data-dir", "/srv/node"}}
	if err := Install(c, io.Discard); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "srv/node/agent")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// Something mounted in the data: removing it would reach through.
	if err := unix.Mount("tmpfs", data, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unix.Unmount(data, 0)
		}
	}()
	err := Uninstall(root, false, true, append([]string{"/var/lib/hakube"}, DataDirs(root)...), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "is mounted below") {
		t.Fatalf("Uninstall with a mount in the data: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, unitDir, "hakube-agent.service")); err != nil {
		t.Fatalf("a refused uninstall removed the unit: %v", err)
	}
	if err := unix.Unmount(data, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if err := Uninstall(root, false, true, append([]string{"/var/lib/hakube"}, DataDirs(root)...), io.Discard); err != nil {
		t.Fatal(err)
	}
	var left []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("left after uninstall: %v", left)
	}
}

func TestQuoteIsOneWordForSystemd(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"a b":            `"a b"`,
		`say "hi"`:       `"say \"hi\""`,
		"100%":           "100%%",
		"$PATH":          "$$PATH",
		`back\slash`:     `"back\\slash"`,
		"":               `""`,
		"key=value;next": `"key=value;next"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
