package checkconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// machine writes the files of a host under a temporary root.
func machine(t *testing.T, files map[string]string, programs ...string) Host {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	look := func(name string) (string, error) {
		for _, p := range programs {
			if p == name {
				return "/usr/sbin/" + name, nil
			}
		}
		return "", errors.New("not found")
	}
	return Host{Root: root, LookPath: look}
}

func find(t *testing.T, fs []Finding, name string) Finding {
	t.Helper()
	for _, f := range fs {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no finding %q in %+v", name, fs)
	return Finding{}
}

const v1Mounts = `cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/devices cgroup rw,relatime,devices 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
`

// TestReadyMachine: a machine with everything passes, as root.
func TestReadyMachine(t *testing.T) {
	h := machine(t, map[string]string{
		"proc/mounts": v1Mounts, "proc/filesystems": "nodev\tsysfs\nnodev\toverlay\n",
		"sys/module/br_netfilter/x": "", "sys/module/vxlan/x": "",
		"proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n", "proc/sys/net/ipv4/ip_forward": "1\n",
	}, "iptables", "conntrack")
	fs := h.Check()
	for _, f := range fs {
		if f.Level != OK {
			t.Errorf("%s: %s (%s)", f.Name, f.Level, f.Detail)
		}
	}
	if Failed(fs) {
		t.Fatal("a ready machine failed")
	}
}

// TestMissingPieces: each gap is named with its fix; only required ones fail.
func TestMissingPieces(t *testing.T) {
	h := machine(t, map[string]string{
		"proc/mounts":                  strings.ReplaceAll(v1Mounts, "memory", "hugetlb"),
		"proc/filesystems":             "nodev\tsysfs\n",
		"proc/swaps":                   "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1024 0 -2\n",
		"proc/sys/net/ipv4/ip_forward": "0\n",
	})
	h.Euid = 1000
	fs := h.Check()
	for name, want := range map[string]Level{"root": Missing, "cgroups": Missing, "overlay": Warning, "br_netfilter": Missing,
		"vxlan": Warning, "iptables": Missing, "conntrack": Warning, "swap": Warning, "ip_forward": Warning} {
		f := find(t, fs, name)
		if f.Level != want || f.Fix == "" {
			t.Errorf("%s: %s with fix %q, want %s with a fix", name, f.Level, f.Fix, want)
		}
	}
	if c := find(t, fs, "cgroups"); !strings.Contains(c.Fix, "memory") {
		t.Errorf("the cgroup fix does not name the missing controller: %q", c.Fix)
	}
	if !Failed(fs) {
		t.Fatal("a machine missing required pieces passed")
	}
}

// TestCgroupV2: the unified hierarchy is read from cgroup.controllers.
func TestCgroupV2(t *testing.T) {
	ok := machine(t, map[string]string{"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids\n"})
	if f := find(t, ok.Check(), "cgroups"); f.Level != OK || !strings.Contains(f.Detail, "v2") {
		t.Fatalf("cgroup v2 with every controller: %+v", f)
	}
	bad := machine(t, map[string]string{"sys/fs/cgroup/cgroup.controllers": "cpu io\n"})
	if f := find(t, bad.Check(), "cgroups"); f.Level != Missing || !strings.Contains(f.Fix, "memory") {
		t.Fatalf("cgroup v2 without memory: %+v", f)
	}
}
