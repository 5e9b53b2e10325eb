package harness

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NodePaths are the machine paths a node host has to itself: a kubelet,
// containerd and the CNI plugins write there. On a node host each is a bind
// mount of a per-host directory (Host.NodeDir).
var NodePaths = []string{
	"/var/lib/kubelet",
	"/run/containerd",
	"/var/lib/containerd",
	"/var/lib/cni",
	"/etc/cni/net.d",
	"/var/log/pods",
	"/run/netns",
}

// kubeletSysctls are the machine-wide settings a kubelet with
// protectKernelDefaults: false writes; the harness puts them back.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// node is what makes a Host a node host: a mount namespace of its own, held
// open by a holder process, prepared once and entered by every process of the
// host, so they all see the same mounts, as on a machine.
type node struct {
	t       testing.TB
	root    string // per-host directories: root+path for each of NodePaths
	cgroup  string // cgroup parent, e.g. /hakube-test-hk1a2b3ch1
	wrapper string // the script Wrap runs
	holder  *exec.Cmd
	exited  chan struct{} // closed when the holder is reaped
	mntNS   nsID          // the host's mount namespace
	netNS   nsID          // the host's network namespace
	user    string        // this host's entry in the machine-wide node state
	once    sync.Once
}

type nsID struct{ dev, ino uint64 }

func nsOf(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// NewNodeNetwork is NewNetwork with every host a node host (EnableNode).
func NewNodeNetwork(t testing.TB, n int) *Network {
	t.Helper()
	nw := NewNetwork(t, n)
	for _, h := range nw.Hosts {
		h.EnableNode(t)
	}
	return nw
}

// AddNodeHost adds host number i (1-based) as a node host.
func (nw *Network) AddNodeHost(i int) *Host {
	h := nw.AddHost(i)
	h.EnableNode(nw.t)
	return h
}

// EnableNode makes h a node host, one that can run a kubelet, containerd and
// its shims: from now on Wrap runs programs in the host's network namespace
// AND in a private mount namespace of the host's, which has
//
//   - a fresh sysfs on /sys (its /sys/class/net is the host's), with the
//     cgroup hierarchies mounted again under /sys/fs/cgroup as in the root
//     namespace (`ip netns exec` leaves /sys/fs/cgroup empty: runc and the
//     kubelet break);
//   - each of NodePaths bind-mounted from the host's own directory
//     (NodeDir), /run/netns included: pod network namespaces pinned there
//     stay the host's;
//   - / made rshared (mounts propagate inside the host, never out of it:
//     the namespace starts as a slave of the root one).
//
// It also creates the host's cgroup parent (CgroupParent) in every mounted
// hierarchy, for the kubelet's cgroup root. Call it before the host's
// processes are prepared (Server, Wrap). Cleanup, registered here, tears it
// all down; the root mount namespace is left as it was.
func (h *Host) EnableNode(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if h.node != nil {
		return
	}
	for _, bin := range []string{"nsenter", "unshare", "mount", "bash"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s (util-linux) is required for node hosts", bin)
		}
	}
	n := &node{t: t, root: filepath.Join(t.TempDir(), h.Name), cgroup: "/hakube-test-" + h.Name, exited: make(chan struct{})}
	h.node = n
	// Registered now, so it runs even if the rest fails half way, and before
	// the temporary directory is removed.
	t.Cleanup(h.Cleanup)
	for _, p := range NodePaths {
		if err := os.MkdirAll(n.root+p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mounts, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n.user = fmt.Sprintf("%d:%s:%s", os.Getpid(), procStart(os.Getpid()), h.Name)
	if err := registerNode(t, n.user); err != nil {
		t.Fatal(err)
	}
	if err := createCgroups(n.cgroup); err != nil {
		t.Fatal(err)
	}
	setup := filepath.Join(n.root, "setup.sh")
	if err := os.WriteFile(setup, []byte(nodeSetupScript(h.Name, n.root, mounts)), 0o755); err != nil {
		t.Fatal(err)
	}
	if n.netNS, err = nsOf("/run/netns/" + h.Name); err != nil {
		t.Fatal(err)
	}
	if err := n.startHolder(h.Name, setup); err != nil {
		t.Fatal(err)
	}
	pid := n.holder.Process.Pid
	n.wrapper = filepath.Join(n.root, "wrap.sh")
	if err := os.WriteFile(n.wrapper, []byte(nodeWrapScript(h.Name, pid, n.mntNS)), 0o755); err != nil {
		t.Fatal(err)
	}
}

// startHolder starts the process that creates the host's mount namespace,
// prepares it and then sleeps, keeping it alive; Wrap enters it through
// /proc/<holder>/ns/mnt.
func (n *node) startHolder(name, setup string) error {
	// nsenter first, in the root mount namespace where /run/netns/<name> is
	// reachable (inside the host, /run/netns is the host's own directory);
	// the new mount namespace is then created inside the network namespace,
	// so the fresh sysfs shows the host's network devices.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+name, "--",
		"unshare", "--mount", "--propagation", "slave", "--", "bash", setup)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return err
	}
	pw.Close()
	n.holder = cmd
	go func() {
		_ = cmd.Wait()
		close(n.exited)
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		pr.Close()
	}()
	var out []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return fmt.Errorf("preparing node host %s failed:\n%s", name, strings.Join(out, "\n"))
			}
			if l != "ready" {
				out = append(out, l)
				continue
			}
			id, err := nsOf(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
			if err != nil {
				return err
			}
			if root, _ := nsOf("/proc/self/ns/mnt"); id == root {
				return fmt.Errorf("node host %s: the holder is in the root mount namespace", name)
			}
			n.mntNS = id
			// Drain: the holder's sleep writes nothing, but keep the pipe read.
			go func() {
				for range lines {
				}
			}()
			return nil
		case <-timeout:
			return fmt.Errorf("preparing node host %s: not ready after 30s:\n%s", name, strings.Join(out, "\n"))
		}
	}
}

// nodeSetupScript prepares the new mount namespace; it runs in it, in the
// host's network namespace, and ends as the holder.
func nodeSetupScript(name, root string, mounts []mountEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# Prepares the mount namespace of node host %s (written by the test harness).\nset -euo pipefail\ntrap 'echo \"line $LINENO: $BASH_COMMAND failed\" >&2' ERR\n", name)
	b.WriteString("# A fresh sysfs: /sys/class/net is this network namespace's.\nmount -t sysfs -o rw,nosuid,nodev,noexec,relatime sysfs /sys\n")
	b.WriteString("# The cgroup tree as in the root namespace (the fresh sysfs hides it).\n")
	for _, m := range mounts {
		if m.point != "/sys/fs/cgroup" && !strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			continue
		}
		opts := m.options(m.fstype == "tmpfs")
		fmt.Fprintf(&b, "mkdir -p %s\nmount -t %s -o %s %s %s\n", shq(m.point), shq(m.fstype), shq(opts), shq(m.source), shq(m.point))
		if m.fstype == "tmpfs" {
			// Symlinks in it, such as cpu -> cpu,cpuacct.
			entries, _ := os.ReadDir(m.point)
			for _, e := range entries {
				if e.Type()&fs.ModeSymlink == 0 {
					continue
				}
				if target, err := os.Readlink(filepath.Join(m.point, e.Name())); err == nil {
					fmt.Fprintf(&b, "ln -sfn %s %s\n", shq(target), shq(filepath.Join(m.point, e.Name())))
				}
			}
		}
	}
	b.WriteString("# The host's own directories.\n")
	for _, p := range NodePaths {
		fmt.Fprintf(&b, "mkdir -p %s\nmount --bind %s %s\n", shq(p), shq(root+p), shq(p))
	}
	b.WriteString("# Mounts propagate inside the host (kubelet, containerd), never out: this namespace is a slave.\nmount --make-rshared /\n")
	fmt.Fprintf(&b, "echo ready\nexec -a hakube-node-%s sleep infinity </dev/null >/dev/null 2>&1\n", name)
	return b.String()
}

// nodeWrapScript runs "$@" in the host's network and mount namespaces, in
// the caller's working directory. The holder's mount namespace is checked
// first: its pid could have been reused.
func nodeWrapScript(name string, pid int, mnt nsID) string {
	return fmt.Sprintf(`#!/bin/bash
# Runs "$@" on node host %[1]s: in its network and mount namespaces (written by the test harness).
if [ "$(stat -L -c %%d:%%i /proc/%[2]d/ns/mnt 2>/dev/null)" != "%[3]d:%[4]d" ]; then
	echo "node host %[1]s is gone: its mount namespace holder (pid %[2]d) has exited" >&2
	exit 125
fi
exec nsenter --mount=/proc/%[2]d/ns/mnt --net=/run/netns/%[1]s --wdns="$PWD" -- "$@"
`, name, pid, mnt.dev, mnt.ino)
}

// IsNode reports whether h is a node host.
func (h *Host) IsNode() bool { return h.node != nil }

// CgroupParent is the node host's cgroup parent, present in every mounted
// hierarchy, for --kubelet-arg=cgroup-root=<it>: the host's pods go under it
// and its cleanup kills whatever is in it. Empty for other hosts.
func (h *Host) CgroupParent() string {
	if h.node == nil {
		return ""
	}
	return h.node.cgroup
}

// NodeDir is the per-host directory a node host sees at path, one of
// NodePaths (e.g. NodeDir("/run/containerd")); NodeDir("") is their root.
func (h *Host) NodeDir(path string) string {
	if h.node == nil {
		return ""
	}
	return h.node.root + path
}

// NodeProcesses are the processes on the node host: in its network or mount
// namespace, or in its cgroup parent (a container's). The holder is one.
func (h *Host) NodeProcesses() []int {
	if h.node == nil {
		return nil
	}
	return sortedPids(h.node.processes())
}

// Cleanup tears a node host down; it is registered by EnableNode and may be
// called earlier (stop the host's Processes first). It kills every process
// left in the host's network namespace, its mount namespace and its cgroup
// parent (shims and containers outlive a killed server), waits for them to
// exit, removes the host's cgroups, and, with the machine's last node host,
// the mount points the harness created and the kubelet's sysctl changes.
// No mount is undone: they are all in the host's mount namespace, which goes
// with its last process.
func (h *Host) Cleanup() {
	n := h.node
	if n == nil {
		return
	}
	n.once.Do(func() {
		t := n.t
		if err := n.killAll(30 * time.Second); err != nil {
			t.Errorf("node host %s: %v", h.Name, err)
		}
		if n.holder != nil {
			_ = n.holder.Process.Kill() // already dead, unless its setup failed
			select {
			case <-n.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("node host %s: holder did not exit", h.Name)
			}
		}
		if err := removeCgroups(n.cgroup, 10*time.Second); err != nil {
			t.Errorf("node host %s: %v", h.Name, err)
		}
		if n.user != "" {
			if err := unregisterNode(t, n.user); err != nil {
				t.Errorf("node host %s: %v", h.Name, err)
			}
		}
	})
}

// processes lists the node's processes (see NodeProcesses) with their start
// times, which tell a process from a later one with the same pid.
func (n *node) processes() map[int]string {
	self := os.Getpid()
	found := map[int]string{}
	add := func(pid int) {
		if pid == self || pid == 1 || isZombie(pid) {
			return
		}
		if start := procStart(pid); start != "" {
			found[pid] = start
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A zombie has no namespaces left: it is gone as far as we care.
		if id, err := nsOf(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && id == n.netNS && n.netNS != (nsID{}) {
			add(pid)
		} else if id, err := nsOf(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && id == n.mntNS && n.mntNS != (nsID{}) {
			add(pid)
		}
	}
	// What is in the cgroup parent: cgroup.procs has every process with a
	// thread there.
	for _, dir := range cgroupDirs(n.cgroup) {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, l := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(l); err == nil {
				add(pid)
			}
		}
	}
	return found
}

func sortedPids(m map[int]string) []int {
	pids := make([]int, 0, len(m))
	for pid := range m {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// killAll SIGKILLs the node's processes until none is left (new ones may be
// forked while it runs), thawing frozen cgroups first. A process is signalled
// through a pidfd, once its start time shows the pid was not reused.
func (n *node) killAll(timeout time.Duration) error {
	for _, dir := range cgroupDirs(n.cgroup) {
		_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
		_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
	}
	deadline := time.Now().Add(timeout)
	for {
		procs := n.processes()
		if len(procs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still alive after %s: %v", timeout, describePids(sortedPids(procs)))
		}
		for pid, start := range procs {
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if procStart(pid) == start {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			}
			unix.Close(fd)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func describePids(pids []int) string {
	var s []string
	for _, pid := range pids {
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		s = append(s, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(c), "\x00", " "))))
	}
	return strings.Join(s, ", ")
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// procStart is a process's start time in clock ticks since boot: with its
// pid, it names the process across pid reuse.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 of stat; f[0] is field 3
}

// mountEntry is one line of /proc/<pid>/mountinfo.
type mountEntry struct {
	point, mountOpts, fstype, source, superOpts string
}

// options are the mount(8) -o options that mount the entry again.
func (m mountEntry) options(withSuper bool) string {
	opts := strings.Split(m.mountOpts, ",")
	if m.fstype == "cgroup" || m.fstype == "cgroup2" || withSuper {
		for _, o := range strings.Split(m.superOpts, ",") {
			if o != "rw" && o != "ro" && o != "" {
				opts = append(opts, o)
			}
		}
	}
	return strings.Join(opts, ",")
}

func readMountinfo(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ms []mountEntry
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		ms = append(ms, mountEntry{point: unescapeMount(f[4]), mountOpts: f[5], fstype: f[sep+1], source: unescapeMount(f[sep+2]), superOpts: f[sep+3]})
	}
	return ms, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupHierarchies are the mount points of the cgroup hierarchies in the
// root namespace (v1 controllers, named ones, and the unified one).
func cgroupHierarchies() []string {
	ms, _ := readMountinfo("/proc/self/mountinfo")
	seen := map[string]bool{}
	var hs []string
	for _, m := range ms {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && !seen[m.point] {
			seen[m.point] = true
			hs = append(hs, m.point)
		}
	}
	return hs
}

// cgroupDirs are the cgroup parent and everything under it, in every
// hierarchy, deepest first.
func cgroupDirs(parent string) []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(h+parent, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

// createCgroups makes the cgroup parent in every hierarchy; a cpuset gets its
// parent's cpus and mems, without which nothing can join it.
func createCgroups(parent string) error {
	for _, h := range cgroupHierarchies() {
		dir := h + parent
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0); err != nil {
				return fmt.Errorf("%s/%s: %w", dir, f, err)
			}
		}
	}
	return nil
}

// removeCgroups removes the cgroup parent and its children, deepest first,
// retrying while the last tasks leave them.
func removeCgroups(parent string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var errs []string
		for _, dir := range cgroupDirs(parent) {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Sprintf("%s: %v", dir, err))
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing cgroups: %s", strings.Join(errs, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// The machine-wide state of node hosts, shared by every test process (go test
// runs packages in parallel) under an flock: which node hosts are alive, the
// mount points the harness created on the root filesystem (a node host binds
// over them; they are removed with the last node host, never while another
// host may use them: removing a directory that is a mount point in another
// mount namespace detaches that mount), and the machine's sysctl values from
// before the first node host, put back by the last.
const nodeStatePath = "/tmp/hakube-test-nodes.state"

type nodeState struct {
	Users   []string          `json:"users"`             // "<pid>:<start>:<host>"
	Created []string          `json:"created,omitempty"` // parents first
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

func withNodeState(fn func(*nodeState) error) error {
	f, err := os.OpenFile(nodeStatePath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	var st nodeState
	if b, _ := os.ReadFile(nodeStatePath); len(b) > 0 {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("%s: %w", nodeStatePath, err)
		}
	}
	// Forget hosts of test processes that are gone.
	live := st.Users[:0]
	for _, u := range st.Users {
		parts := strings.SplitN(u, ":", 3)
		if pid, err := strconv.Atoi(parts[0]); err == nil && len(parts) == 3 && procStart(pid) == parts[1] {
			live = append(live, u)
		}
	}
	st.Users = live
	if err := fn(&st); err != nil {
		return err
	}
	b, _ := json.Marshal(st)
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	return err
}

func registerNode(t testing.TB, user string) error {
	return withNodeState(func(st *nodeState) error {
		if st.Sysctls == nil {
			st.Sysctls = map[string]string{}
			for _, k := range kubeletSysctls {
				b, err := os.ReadFile("/proc/sys/" + k)
				if err != nil {
					return err
				}
				st.Sysctls[k] = strings.TrimSpace(string(b))
			}
		}
		for _, p := range NodePaths {
			var missing []string
			for d := p; d != "/"; d = filepath.Dir(d) {
				if _, err := os.Lstat(d); err == nil {
					break
				}
				missing = append([]string{d}, missing...)
			}
			for _, d := range missing {
				if err := os.Mkdir(d, 0o755); err != nil {
					return err
				}
				st.Created = append(st.Created, d)
			}
		}
		st.Users = append(st.Users, user)
		return nil
	})
}

func unregisterNode(t testing.TB, user string) error {
	return withNodeState(func(st *nodeState) error {
		users := st.Users[:0]
		for _, u := range st.Users {
			if u != user {
				users = append(users, u)
			}
		}
		st.Users = users
		if len(st.Users) > 0 {
			return nil
		}
		for _, k := range kubeletSysctls {
			want, ok := st.Sysctls[k]
			if !ok {
				continue
			}
			b, err := os.ReadFile("/proc/sys/" + k)
			if err != nil || strings.TrimSpace(string(b)) == want {
				continue
			}
			t.Logf("restoring %s to %s (was %s)", strings.ReplaceAll(k, "/", "."), want, strings.TrimSpace(string(b)))
			if err := os.WriteFile("/proc/sys/"+k, []byte(want), 0); err != nil {
				return fmt.Errorf("restoring %s: %w", k, err)
			}
		}
		st.Sysctls = nil
		var kept []string
		for i := len(st.Created) - 1; i >= 0; i-- {
			if err := unix.Rmdir(st.Created[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Logf("leaving %s: %v", st.Created[i], err)
				kept = append([]string{st.Created[i]}, kept...)
			}
		}
		st.Created = kept
		return nil
	})
}
