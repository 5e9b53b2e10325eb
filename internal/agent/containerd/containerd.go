// Package containerd runs the node's container runtime: containerd 2.x as a
// child process of the hakube binary (hakube containerd), with the runc v2
// shim and runc shipped beside it, configured under <data-dir>/agent.
package containerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	ctd "github.com/containerd/containerd/v2/client"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/layout"
)

// Namespace is the containerd namespace the CRI keeps Kubernetes' images in.
const Namespace = "k8s.io"

// Shim is the runtime binary containerd looks up on PATH for io.containerd.runc.v2.
const Shim = "containerd-shim-runc-v2"

// Config is the runtime of one node.
type Config struct {
	Layout layout.Layout
	// BinDir holds runc, the shim and the CNI plugins (BinDir/cni).
	BinDir string
	// PauseImage is the sandbox image; it is pinned.
	PauseImage string
	// Executable is the hakube binary to run as containerd.
	Executable string
	// Registries is a registries.yaml (K3s's format); a missing file is none.
	Registries string
	// Mirror is the node's registry mirror of its imported images (URL and
	// headers), asked at Start (the mirror starts first); nil is none.
	Mirror func() (url string, header map[string]string)
}

// CNIBinDir is where the CNI plugins are.
func (c Config) CNIBinDir() string { return filepath.Join(c.BinDir, "cni") }

// Validate checks that what containerd runs is there.
func (c Config) Validate() error {
	for _, f := range []string{filepath.Join(c.BinDir, "runc"), filepath.Join(c.BinDir, Shim),
		filepath.Join(c.CNIBinDir(), "bridge"), filepath.Join(c.CNIBinDir(), "host-local"),
		filepath.Join(c.CNIBinDir(), "loopback"), filepath.Join(c.CNIBinDir(), "portmap")} {
		if st, err := os.Stat(f); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is missing: hakube's node binaries (runc, %s, the CNI plugins) ship beside it; "+
				"build them with 'make build' (into bin/), pass --bin-dir to where they are, or use another runtime with --container-runtime-endpoint", f, Shim)
		}
	}
	// A unix socket path is at most 107 bytes.
	if s := c.Layout.ContainerdSocket(); len(s) > 107 {
		return fmt.Errorf("containerd's socket %s is longer than a unix socket path may be (107 bytes): use a shorter --data-dir", s)
	}
	return nil
}

// Containerd is the component.
type Containerd struct {
	cfg        Config
	registries *Registries
	cancel     context.CancelFunc
	stopped    chan struct{}
}

// New returns the component.
func New(cfg Config) *Containerd { return &Containerd{cfg: cfg} }

func (c *Containerd) Name() string { return "containerd" }

func (c *Containerd) Init(context.Context) error {
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	var err error
	c.registries, err = LoadRegistries(c.cfg.Registries)
	return err
}

// Start writes the configuration and starts containerd; it keeps it running,
// starting it again if it exits, until Stop.
func (c *Containerd) Start(ctx context.Context) error {
	l := c.cfg.Layout
	for _, d := range []string{l.Containerd(), l.ContainerdState(), l.CNIConf(), l.CNIState(), l.Images(), l.PodLogs()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	restrict := !hasCapability(capSysResource)
	if restrict {
		klog.Infof("containerd: this process lacks CAP_SYS_RESOURCE, so containers keep the OOM score they inherit (restrict_oom_score_adj)")
	}
	// Written even without registries.yaml: containerd would otherwise read
	// the machine's /etc/containerd/certs.d.
	var mirror LocalMirror
	if c.cfg.Mirror != nil {
		mirror.URL, mirror.Header = c.cfg.Mirror()
	}
	if err := c.registries.WriteHosts(l.ContainerdHosts(), mirror); err != nil {
		return err
	}
	if err := fsutil.WriteFile(l.ContainerdConfig(), []byte(c.config(restrict)), 0o600); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel, c.stopped = cancel, make(chan struct{})
	go c.supervise(runCtx)
	return nil
}

// Ready waits until containerd answers on its socket.
func (c *Containerd) Ready(ctx context.Context) error {
	start := time.Now()
	for {
		if err := c.ping(ctx); err == nil {
			klog.Infof("node: containerd is up (%s)", time.Since(start).Round(time.Millisecond))
			return nil
		} else if time.Since(start) > time.Minute {
			return fmt.Errorf("containerd did not answer within a minute (%v); its log is %s", err, c.cfg.Layout.ContainerdLog())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stopped:
			return fmt.Errorf("containerd stopped; its log is %s", c.cfg.Layout.ContainerdLog())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Containerd) ping(ctx context.Context) error {
	cl, err := ctd.New(c.cfg.Layout.ContainerdSocket(), ctd.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ok, err := cl.IsServing(ctx)
	if err == nil && !ok {
		err = errors.New("not serving")
	}
	return err
}

// Stop stops containerd; the containers and their shims keep running, so a
// restarted node finds its pods.
func (c *Containerd) Stop() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	<-c.stopped
	return nil
}

// supervise runs containerd until ctx ends, starting it again when it exits
// (at most every 5 s): a server that is a node must not end because its
// runtime did.
func (c *Containerd) supervise(ctx context.Context) {
	defer close(c.stopped)
	for {
		began := time.Now()
		err := c.run(ctx)
		if ctx.Err() != nil {
			return
		}
		klog.Errorf("containerd exited (%v); its log is %s; starting it again", err, c.cfg.Layout.ContainerdLog())
		select {
		case <-ctx.Done():
			return
		case <-time.After(5*time.Second - time.Since(began)):
		}
	}
}

// run runs containerd once. The child gets SIGKILL if this thread ends
// (Pdeathsig is per thread, so the thread stays locked until the child is
// reaped): a killed hakube leaves no containerd behind, while the shims,
// which containerd starts in their own sessions, keep the containers.
func (c *Containerd) run(ctx context.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	log, err := os.OpenFile(c.cfg.Layout.ContainerdLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	l := c.cfg.Layout
	cmd := exec.Command(c.cfg.Executable, "containerd", "--config", l.ContainerdConfig(),
		"--address", l.ContainerdSocket(), "--root", l.Containerd(), "--state", l.ContainerdState())
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH="+c.cfg.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
			}
		case <-done:
		}
	}()
	err = cmd.Wait()
	done <- err
	return err
}

func (c *Containerd) config(restrictOOM bool) string {
	l := c.cfg.Layout
	q := strconv.Quote
	var b strings.Builder
	// Version 3 is what containerd 2.4 reads as is: with another version it
	// migrates the file and drops the socket address (seen: it served on
	// /run/containerd/containerd.sock).
	fmt.Fprintf(&b, "# Generated by hakube at every start: edits are lost.\nversion = 3\nroot = %s\nstate = %s\n", q(l.Containerd()), q(l.ContainerdState()))
	fmt.Fprintf(&b, "[grpc]\n  address = %s\n", q(l.ContainerdSocket()))
	fmt.Fprintf(&b, "[ttrpc]\n  address = %s\n", q(l.ContainerdSocket()+".ttrpc"))
	// NRI would serve on /var/run/nri/nri.sock, shared by every node of a machine.
	fmt.Fprintf(&b, "[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n")
	fmt.Fprintf(&b, "[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n")
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.cri.v1.images\".pinned_images]\n    sandbox = %s\n", q(c.cfg.PauseImage))
	b.WriteString(RegistryConfigTOML(l.ContainerdHosts()))
	// Pod network namespaces are pinned under the state dir, not in the
	// machine's /run/netns, so several nodes can share a machine.
	fmt.Fprintf(&b, "[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = %t\n  netns_mounts_under_state_dir = true\n", restrictOOM)
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.cri.v1.runtime\".cni]\n    bin_dirs = [%s]\n    conf_dir = %s\n", q(c.cfg.CNIBinDir()), q(l.CNIConf()))
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.cri.v1.runtime\".containerd]\n    default_runtime_name = \"runc\"\n")
	fmt.Fprintf(&b, "    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
	fmt.Fprintf(&b, "      [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n        BinaryName = %s\n        SystemdCgroup = false\n",
		q(filepath.Join(c.cfg.BinDir, "runc")))
	return b.String()
}

// capSysResource lets a process raise OOM scores (runc sets the container's).
const capSysResource = 24

func hasCapability(bit uint) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<bit) != 0
		}
	}
	return false
}
