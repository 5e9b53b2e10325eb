package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeHostIsolation: two node hosts each see their own network, the
// cgroup tree, their own kubelet/containerd directories and mounts (kept
// across programs: one mount namespace per host), none of which shows in the
// other host or in the root namespace; cleanup kills what was left behind on
// a host, even daemonized or only in its cgroup parent, removes its cgroups,
// restores the kubelet's sysctls and leaves the root namespace as it was.
func TestNodeHostIsolation(t *testing.T) {
	RequireRoot(t)
	watched := []string{"/run/containerd", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni", "/etc/cni", "/var/log/pods"}
	existed := map[string]bool{}
	for _, p := range watched {
		_, err := os.Lstat(p)
		existed[p] = err == nil
	}
	sysctlsBefore := readSysctls(t)

	began := time.Now()
	nw := NewNodeNetwork(t, 2)
	a, b := nw.Hosts[0], nw.Hosts[1]
	t.Logf("two node hosts ready in %s", time.Since(began).Round(time.Millisecond))
	run := func(h *Host, script string) string {
		t.Helper()
		argv := append(h.Wrap(), "bash", "-c", script)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("on %s: %s: %v\n%s", h.Name, script, err, out)
		}
		return string(out)
	}

	// The cgroup hierarchies, the host's own network devices and address.
	for _, ctrl := range []string{"memory", "cpu", "cpuset", "pids", "systemd"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + ctrl); err != nil {
			continue
		}
		out := run(a, "ls /sys/fs/cgroup/"+ctrl)
		if !strings.Contains(out, "cgroup.procs") || !strings.Contains(out, strings.TrimPrefix(a.CgroupParent(), "/")) {
			t.Fatalf("/sys/fs/cgroup/%s on %s lacks the hierarchy or the cgroup parent:\n%s", ctrl, a.Name, out)
		}
	}
	if out := run(a, "cat /sys/fs/cgroup/cpuset"+a.CgroupParent()+"/cpuset.cpus"); strings.TrimSpace(out) == "" {
		t.Fatal("the cgroup parent's cpuset has no cpus")
	}
	if out := run(a, "ls /sys/class/net"); strings.Fields(out)[0] != "eth0" || len(strings.Fields(out)) != 2 {
		t.Fatalf("/sys/class/net on %s is not the host's: %q", a.Name, out)
	}
	if out := run(a, "ip -o -4 addr show"); !strings.Contains(out, a.IP+"/24") || strings.Contains(out, b.IP) {
		t.Fatalf("addresses on %s:\n%s", a.Name, out)
	}

	// Node directories and mounts are the host's.
	run(a, "echo A > /run/containerd/x && echo A > /var/lib/kubelet/x && touch /run/netns/x && "+
		"mkdir -p /var/lib/kubelet/m && mount -t tmpfs node-test /var/lib/kubelet/m && echo A > /var/lib/kubelet/m/f")
	if out := run(a, "cat /var/lib/kubelet/m/f /run/containerd/x"); out != "A\nA\n" {
		t.Fatalf("a mount made on %s is gone in its next program: %q", a.Name, out)
	}
	for _, p := range []string{"/run/containerd/x", "/var/lib/kubelet/x", "/run/netns/x"} {
		if _, err := os.Stat(a.NodeDir(p)); err != nil {
			t.Fatalf("%s on %s is not in its node dir: %v", p, a.Name, err)
		}
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s written on %s shows in the root namespace", p, a.Name)
		}
	}
	if _, err := os.Stat(a.NodeDir("/var/lib/kubelet/m/f")); err == nil {
		t.Fatal("the tmpfs mounted on the host shows outside it")
	}
	if out := run(b, "find /run/containerd /var/lib/kubelet /run/netns -mindepth 1"); out != "" {
		t.Fatalf("%s sees %s's files:\n%s", b.Name, a.Name, out)
	}
	if out := run(b, "grep -c node-test /proc/self/mountinfo || true"); out != "0\n" {
		t.Fatalf("%s sees %s's tmpfs: %q", b.Name, a.Name, out)
	}
	if out := run(a, "ls /run/netns"); strings.Contains(out, a.Name) {
		t.Fatalf("the root's namespace pins show on %s: %s", a.Name, out)
	}
	for _, p := range mountPoints(t) {
		for _, under := range append([]string{a.NodeDir(""), b.NodeDir(""), "/var/lib/kubelet", "/run/containerd", "/var/lib/containerd", "/var/lib/cni", "/etc/cni", "/var/log/pods"}, "/run/netns/x") {
			if p == under || strings.HasPrefix(p, under+"/") {
				t.Fatalf("a node host's mount %s shows in the root namespace", p)
			}
		}
	}

	// Left behind on A: a daemonized process, one that moved itself into the
	// cgroup parent, and one only in a child cgroup (started from the root
	// namespace: only the cgroup sweep finds it).
	pids := []int{}
	pidOf := func(out string) int {
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("no pid in %q", out)
		}
		return pid
	}
	pids = append(pids, pidOf(run(a, "setsid nohup sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")))
	pids = append(pids, pidOf(run(a, fmt.Sprintf("setsid bash -c 'echo $$ > /sys/fs/cgroup/pids%s/cgroup.procs; exec sleep 1001' </dev/null >/dev/null 2>&1 & echo $!", a.CgroupParent()))))
	child := a.CgroupParent() + "/pod1/ctr"
	for _, ctrl := range []string{"pids", "memory"} {
		if err := os.MkdirAll("/sys/fs/cgroup/"+ctrl+child, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("bash", "-c", fmt.Sprintf("setsid bash -c 'echo $$ > /sys/fs/cgroup/pids%[1]s/cgroup.procs; echo $$ > /sys/fs/cgroup/memory%[1]s/cgroup.procs; exec sleep 1002' </dev/null >/dev/null 2>&1 & echo $!", child)).Output()
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, pidOf(string(out)))
	// The kubelet's kind of machine-wide change.
	run(a, fmt.Sprintf("echo %d > /proc/sys/kernel/panic", atoi(t, sysctlsBefore["kernel/panic"])+7))
	time.Sleep(200 * time.Millisecond)
	onA := a.NodeProcesses()
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("process %d exited early", pid)
		}
		if !contains(onA, pid) {
			t.Fatalf("process %d is not among %s's processes %v", pid, a.Name, onA)
		}
	}
	if contains(b.NodeProcesses(), pids[0]) {
		t.Fatalf("%s's process counts as %s's", a.Name, b.Name)
	}

	began = time.Now()
	a.Cleanup()
	t.Logf("host %s cleaned up in %s", a.Name, time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if alive(pid) {
			t.Fatalf("process %d survived the cleanup of %s", pid, a.Name)
		}
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*" + a.CgroupParent()); len(left) > 0 {
		t.Fatalf("cgroups left: %v", left)
	}
	if out := run(b, "echo alive"); out != "alive\n" {
		t.Fatalf("%s after %s's cleanup: %q", b.Name, a.Name, out)
	}
	argv := append(a.Wrap(), "true")
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err == nil || !strings.Contains(string(out), "is gone") {
		t.Fatalf("Wrap of a cleaned-up host: %v %s", err, out)
	}
	b.Cleanup()

	// The root namespace is as it was, unless another test process still
	// has node hosts (then the last of them restores it).
	others := false
	_ = withNodeState(func(st *nodeState) error { others = len(st.Users) > 0; return nil })
	if others {
		t.Log("another test process has node hosts: not checking the mount points and sysctls it shares")
		return
	}
	for _, p := range watched {
		_, err := os.Lstat(p)
		if (err == nil) != existed[p] {
			t.Errorf("%s: existed before %v, exists now %v", p, existed[p], err == nil)
		}
	}
	if got := readSysctls(t); fmt.Sprint(got) != fmt.Sprint(sysctlsBefore) {
		t.Errorf("sysctls %v, were %v", got, sysctlsBefore)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/hakube-test-" + "hk" + nw.id + "*"); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

func mountPoints(t *testing.T) []string {
	ms, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ps []string
	for _, m := range ms {
		ps = append(ps, m.point)
	}
	return ps
}

func readSysctls(t *testing.T) map[string]string {
	m := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		m[k] = strings.TrimSpace(string(b))
	}
	return m
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil && !isZombie(pid) }

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeHostServer: a hakube server runs on a node host through the
// harness's ordinary Server path, in the host's mount namespace, and the
// host's cleanup leaves nothing of it.
func TestNodeHostServer(t *testing.T) {
	RequireRoot(t)
	if os.Getenv("HAKUBE_BIN") == "" {
		t.Skip("set HAKUBE_BIN (this test does not build hakube)")
	}
	nw := NewNodeNetwork(t, 1)
	h := nw.Hosts[0]
	s := h.Server(t, "n1")
	s.Start()
	if out, err := s.Kubectl("get", "namespace", "default", "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/default" {
		t.Fatalf("kubectl on the node host: %v %q", err, out)
	}
	mnt, err := nsOf(fmt.Sprintf("/proc/%d/ns/mnt", s.Pid()))
	if err != nil || mnt != h.node.mntNS {
		t.Fatalf("the server is not in the host's mount namespace: %v %v", mnt, err)
	}
	if !contains(h.NodeProcesses(), s.Pid()) {
		t.Fatalf("the server %d is not among the host's processes %v", s.Pid(), h.NodeProcesses())
	}
	if code := s.Stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	h.Cleanup()
	if left := h.NodeProcesses(); len(left) > 0 {
		t.Fatalf("left on the host: %v", left)
	}
}
