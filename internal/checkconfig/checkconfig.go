// Package checkconfig tells whether this machine has what a Kubernetes node
// needs from its host, and how to get what is missing. It reads the machine
// (mounts, /proc, /sys, PATH) and changes nothing.
package checkconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Level says how much a finding matters.
type Level string

// Levels of a finding.
const (
	OK      Level = "ok"
	Warning Level = "warning"
	Missing Level = "missing"
)

// Finding is the result of one check.
type Finding struct {
	Name   string `json:"name"`
	Level  Level  `json:"level"`
	Detail string `json:"detail"`
	// Fix says what to do when the level is not ok.
	Fix string `json:"fix,omitempty"`
}

// Host is the machine looked at: Root prefixes every path read (/ for the
// machine itself), LookPath finds programs.
type Host struct {
	Root     string
	LookPath func(string) (string, error)
	// Euid is the user the check runs as.
	Euid int
}

// Machine is this machine.
func Machine() Host { return Host{Root: "/", LookPath: exec.LookPath, Euid: os.Geteuid()} }

// Check runs every check, in the order they are printed.
func (h Host) Check() []Finding {
	return []Finding{h.root(), h.cgroups(), h.overlay(),
		h.module("br_netfilter", "net/bridge/bridge-nf-call-iptables", "Service traffic between pods on one node goes through iptables",
			Missing, "modprobe br_netfilter (and add it to /etc/modules-load.d/)"),
		h.module("vxlan", "", "flannel's default VXLAN backend", Warning, "modprobe vxlan, or use --flannel-backend=host-gw on one L2 network"),
		h.program("iptables", "kube-proxy and flannel program the packet filter with it", Missing, "apt-get install iptables"),
		h.program("conntrack", "kube-proxy clears stale UDP flows with it", Warning, "apt-get install conntrack"),
		h.swap(), h.forwarding()}
}

// Failed reports whether a finding says something required is missing.
func Failed(fs []Finding) bool {
	for _, f := range fs {
		if f.Level == Missing {
			return true
		}
	}
	return false
}

func (h Host) path(p string) string { return filepath.Join(h.Root, p) }

func (h Host) root() Finding {
	f := Finding{Name: "root", Level: OK, Detail: "running as root"}
	if h.Euid != 0 {
		f.Level, f.Detail, f.Fix = Missing, "a node runs containers, mounts and network set-up as root", "run hakube as root"
	}
	return f
}

// cgroupControllers are those the kubelet needs of cgroup v1.
var cgroupControllers = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "devices"}

func (h Host) cgroups() Finding {
	f := Finding{Name: "cgroups", Level: OK}
	if b, err := os.ReadFile(h.path("/sys/fs/cgroup/cgroup.controllers")); err == nil {
		have := strings.Fields(string(b))
		var missing []string
		for _, c := range []string{"cpu", "cpuset", "memory", "pids"} {
			if !slices.Contains(have, c) {
				missing = append(missing, c)
			}
		}
		f.Detail = "cgroup v2, controllers " + strings.Join(have, " ")
		if len(missing) > 0 {
			f.Level, f.Fix = Missing, "enable the "+strings.Join(missing, ", ")+" controllers (cgroup_enable= on the kernel command line)"
		}
		return f
	}
	mounted := map[string]bool{}
	file, err := os.Open(h.path("/proc/mounts"))
	if err != nil {
		f.Level, f.Detail, f.Fix = Missing, err.Error(), "mount /proc"
		return f
	}
	defer file.Close()
	s := bufio.NewScanner(file)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 4 && fields[2] == "cgroup" {
			for _, o := range strings.Split(fields[3], ",") {
				mounted[o] = true
			}
		}
	}
	var missing []string
	for _, c := range cgroupControllers {
		if !mounted[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) == len(cgroupControllers) {
		f.Level, f.Detail, f.Fix = Missing, "no cgroup hierarchy is mounted", "mount cgroup2 on /sys/fs/cgroup (or the v1 hierarchies)"
		return f
	}
	f.Detail = "cgroup v1 (the kubelet runs on it with failCgroupV1: false; v2 is recommended)"
	if len(missing) > 0 {
		f.Level, f.Fix = Missing, "mount the cgroup v1 controllers "+strings.Join(missing, ", ")+" under /sys/fs/cgroup"
	}
	return f
}

// overlay is a warning only when absent: where it is a module the kernel
// loads it at the first mount, which /proc/filesystems does not show yet.
func (h Host) overlay() Finding {
	f := Finding{Name: "overlay", Level: OK, Detail: "overlay filesystem available"}
	b, err := os.ReadFile(h.path("/proc/filesystems"))
	if err == nil && containsField(string(b), "overlay") {
		return f
	}
	if _, err := os.Stat(h.path("/sys/module/overlay")); err == nil {
		return f
	}
	f.Level, f.Detail = Warning, "overlay filesystem not loaded: containerd's overlayfs snapshotter needs it (the kernel loads it on first use if it is a module)"
	f.Fix = "modprobe overlay; if that fails, the kernel lacks overlayfs (CONFIG_OVERLAY_FS)"
	return f
}

// module checks a kernel module by /sys/module/<name> or, when given, a
// /proc/sys entry it adds.
func (h Host) module(name, procSys, why string, absent Level, fix string) Finding {
	f := Finding{Name: name, Level: OK, Detail: name + " loaded"}
	if _, err := os.Stat(h.path("/sys/module/" + name)); err == nil {
		return f
	}
	if procSys != "" {
		if _, err := os.Stat(h.path("/proc/sys/" + procSys)); err == nil {
			return f
		}
	}
	f.Level, f.Detail, f.Fix = absent, name+" not loaded: "+why, fix
	return f
}

func (h Host) program(name, why string, absent Level, fix string) Finding {
	f := Finding{Name: name, Level: OK}
	p, err := h.LookPath(name)
	if err != nil {
		f.Level, f.Detail, f.Fix = absent, name+" not found on PATH: "+why, fix
		return f
	}
	f.Detail = p
	return f
}

func (h Host) swap() Finding {
	f := Finding{Name: "swap", Level: OK, Detail: "no swap in use"}
	file, err := os.Open(h.path("/proc/swaps"))
	if err != nil {
		return f
	}
	defer file.Close()
	n, _ := lines(file)
	if n > 1 {
		f.Level = Warning
		f.Detail = fmt.Sprintf("%d swap areas in use: the kubelet refuses to start with swap unless told otherwise", n-1)
		f.Fix = "swapoff -a, or --kubelet-arg=fail-swap-on=false"
	}
	return f
}

func (h Host) forwarding() Finding {
	f := Finding{Name: "ip_forward", Level: OK, Detail: "IPv4 forwarding on"}
	b, err := os.ReadFile(h.path("/proc/sys/net/ipv4/ip_forward"))
	if v, _ := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || v != 1 {
		f.Level, f.Detail = Warning, "IPv4 forwarding off: pods on other nodes and Services are unreachable until it is on"
		f.Fix = "sysctl -w net.ipv4.ip_forward=1 (and set it in /etc/sysctl.d/)"
	}
	return f
}

func lines(r io.Reader) (int, error) {
	s := bufio.NewScanner(r)
	n := 0
	for s.Scan() {
		if strings.TrimSpace(s.Text()) != "" {
			n++
		}
	}
	return n, s.Err()
}

func containsField(text, field string) bool {
	for _, line := range strings.Split(text, "\n") {
		if slices.Contains(strings.Fields(line), field) {
			return true
		}
	}
	return false
}
