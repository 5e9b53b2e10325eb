// Package install makes hakube a systemd service: it copies the binary and
// the node bundle beside it (runc, the shim, crictl, cni/, images/) to one
// directory, writes a unit and an environment file that holds the token, and
// enables the unit; Uninstall removes what Install wrote.
//
// A service is what lets a cluster heal from a power cut without a person:
// systemd starts every server at boot, and restarts one that exits.
package install

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hakube/hakube/internal/fsutil"
)

// Roles are the commands a unit can run.
var Roles = []string{"server", "agent"}

// Config is one installation.
type Config struct {
	// Role is server or agent; Args are its flags, as on the command line.
	Role string
	Args []string
	// Token and AgentToken go to the environment file (mode 0600), never into
	// the unit, which every user may read.
	Token, AgentToken string
	// Source is the directory of the hakube binary and its bundle.
	Source string
	// Root prefixes every path written (packagers, tests); "/" is the machine.
	Root string
	// Enable runs systemctl: reload, enable and start the unit.
	Enable bool
}

// Fixed places, as a user finds them on any hakube machine.
const (
	libDir  = "/usr/local/lib/hakube" // the binary and its bundle
	binLink = "/usr/local/bin/hakube" // on PATH
	unitDir = "/etc/systemd/system"
)

// bundle is what a node runs beside the binary, as 'make build' lays it out.
var bundle = []string{"runc", "containerd-shim-runc-v2", "crictl", "cni", "images"}

// Unit is the systemd unit of a role: hakube.service for a server,
// hakube-agent.service for an agent, as K3s names its own.
func Unit(role string) string {
	if role == "agent" {
		return "hakube-agent.service"
	}
	return "hakube.service"
}

func (c Config) path(p string) string { return filepath.Join(c.Root, p) }

// Validate says what is wrong with the configuration and how to fix it.
func (c Config) Validate() error {
	if !slices.Contains(Roles, c.Role) {
		return fmt.Errorf("install %q: give server or agent, then the flags the service runs with", c.Role)
	}
	if !filepath.IsAbs(c.Root) {
		return fmt.Errorf("--root %q: give an absolute path", c.Root)
	}
	if c.Role == "agent" && c.Token == "" && !slices.ContainsFunc(c.Args, isFlag("token-file")) {
		return errors.New("an agent needs the cluster's token: set HAKUBE_TOKEN, or give --token or --token-file")
	}
	if _, err := os.Stat(filepath.Join(c.Source, "hakube")); err != nil {
		return fmt.Errorf("the binary to install: %w", err)
	}
	return nil
}

func isFlag(name string) func(string) bool {
	return func(a string) bool { return a == "--"+name || strings.HasPrefix(a, "--"+name+"=") }
}

// Install copies the bundle, writes the unit and its environment file, and
// enables the unit. A failure removes what this run created; no file is
// ever half-written (a reinstall's files are replaced whole, or not at all).
func Install(c Config, out io.Writer) (err error) {
	if err := c.Validate(); err != nil {
		return err
	}
	var created []string
	create := func(p string) {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			created = append(created, p)
		}
	}
	defer func() {
		if err != nil {
			for _, p := range slices.Backward(created) {
				_ = os.RemoveAll(p)
			}
		}
	}()
	lib := c.path(libDir)
	// The bundle is copied to a new directory first, which replaces the
	// installed one at the end: a copy that fails halfway changes nothing.
	var stage string
	if !sameFile(filepath.Join(c.Source, "hakube"), filepath.Join(lib, "hakube")) {
		stage = lib + ".new"
		if err := os.RemoveAll(stage); err != nil {
			return err
		}
		created = append(created, stage)
		for _, name := range append([]string{"hakube"}, bundle...) {
			src := filepath.Join(c.Source, name)
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) && name != "hakube" {
				fmt.Fprintf(out, "no %s beside the binary: a node needs it ('make build' puts it in bin/)\n", name)
				continue
			}
			if err := copyTree(src, filepath.Join(stage, name)); err != nil {
				return err
			}
		}
	}
	unit := c.path(filepath.Join(unitDir, Unit(c.Role)))
	env := unit + ".env"
	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		path, data string
		mode       os.FileMode
	}{{env, c.envFile(), 0o600}, {unit, c.unitFile(), 0o644}} {
		create(f.path)
		if err := fsutil.WriteFile(f.path, []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	link := c.path(binLink)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	create(link)
	if err := os.Symlink(filepath.Join(libDir, "hakube"), link+".new"); err != nil {
		return err
	}
	if err := os.Rename(link+".new", link); err != nil {
		_ = os.Remove(link + ".new")
		return err
	}
	if stage != "" {
		if err := os.RemoveAll(lib); err != nil {
			return err
		}
		if err := os.Rename(stage, lib); err != nil {
			return err
		}
		fmt.Fprintf(out, "installed the binary and its bundle in %s, linked from %s\n", lib, link)
	}
	fmt.Fprintf(out, "wrote %s and %s (the token, mode 0600)\n", unit, env)
	switch {
	case c.Root != "/":
		fmt.Fprintf(out, "written under %s: nothing was started\n", c.Root)
		return nil
	case !c.Enable:
		fmt.Fprintf(out, "systemd does not run here: on a machine where it does, 'systemctl enable --now %s' starts it\n", Unit(c.Role))
		return nil
	}
	// restart, not start: installing again applies the new flags.
	for _, args := range [][]string{{"daemon-reload"}, {"enable", Unit(c.Role)}, {"restart", Unit(c.Role)}} {
		if err := systemctl(args...); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "enabled and started %s: 'journalctl -u %s -f' follows it\n", Unit(c.Role), Unit(c.Role))
	return nil
}

// SystemdRunning reports whether systemd manages this machine (what
// sd_booted(3) checks).
func SystemdRunning() bool { return fsutil.Exists("/run/systemd/system") }

func (c Config) envFile() string {
	var b strings.Builder
	b.WriteString("# Written by 'hakube install'; the service's secrets, readable by root only.\n")
	if c.Token != "" {
		fmt.Fprintf(&b, "HAKUBE_TOKEN=%s\n", c.Token)
	}
	if c.AgentToken != "" {
		fmt.Fprintf(&b, "HAKUBE_AGENT_TOKEN=%s\n", c.AgentToken)
	}
	return b.String()
}

func (c Config) unitFile() string {
	exec := []string{filepath.Join(libDir, "hakube"), c.Role}
	for _, a := range c.Args {
		exec = append(exec, quote(a))
	}
	return fmt.Sprintf(`# Written by 'hakube install %[1]s': install again to change its flags, 'hakube uninstall' removes it.
[Unit]
Description=hakube %[1]s (Kubernetes)
Wants=network-online.target
After=network-online.target

[Service]
# hakube tells systemd when it is ready (sd_notify): 'systemctl start' waits for it.
Type=notify
EnvironmentFile=-%[2]s
ExecStart=%[3]s
# Stopping or restarting hakube leaves containerd, its shims and the pods
# running: a restart does not restart the workloads.
KillMode=process
# The kubelet creates the pods' cgroups below the unit's own.
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# A joining server may wait long for its cluster; systemd must not give up on it.
TimeoutStartSec=0
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
`, c.Role, filepath.Join(unitDir, Unit(c.Role)+".env"), strings.Join(exec, " "))
}

// quote makes an argument one word of a systemd command line: specifiers
// (%) and variables ($) are escaped, and quotes added where it has spaces
// or quotes.
func quote(a string) string {
	a = strings.NewReplacer("%", "%%", "$", "$$").Replace(a)
	if a != "" && !strings.ContainsAny(a, " \t\"'\\;") {
		return a
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
}

// Uninstall stops and disables the units Install wrote, and removes them,
// their environment files, the bundle and the link; with removeData, the
// data and configuration directories too, unless something still uses them
// (then nothing is removed).
func Uninstall(root string, enable, removeData bool, dataDirs []string, out io.Writer) error {
	var units []string
	for _, role := range Roles {
		if unit := filepath.Join(root, unitDir, Unit(role)); fsutil.Exists(unit) {
			units = append(units, unit)
			if !enable {
				continue
			}
			if err := systemctl("disable", "--now", Unit(role)); err != nil {
				return err
			}
			fmt.Fprintf(out, "stopped and disabled %s\n", Unit(role))
		}
	}
	var data []string
	if removeData {
		for _, d := range dataDirs {
			if p := filepath.Join(root, d); !slices.Contains(data, p) {
				data = append(data, p)
			}
		}
		if err := inUse(root, data); err != nil {
			return err
		}
	}
	var remove []string
	for _, u := range units {
		remove = append(remove, u, u+".env")
	}
	var errs []error
	for _, p := range append(append(remove, filepath.Join(root, binLink), filepath.Join(root, libDir)), data...) {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(out, "removed %s\n", p)
	}
	if enable && len(units) > 0 {
		if err := systemctl("daemon-reload"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// systemctl runs systemctl with args; its output is the error's detail.
func systemctl(args ...string) error {
	if b, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return nil
}

// sameFile reports whether a and b are one existing file (reinstalling from
// the installed binary, to change the flags).
func sameFile(a, b string) bool {
	x, err1 := os.Stat(a)
	y, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(x, y)
}

// copyTree copies a file or a directory, keeping modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, in); err != nil {
			f.Close()
			return fmt.Errorf("copying %s: %w", p, err)
		}
		return f.Close()
	})
}

// DataDirs are the --data-dir flags of the units installed under root.
func DataDirs(root string) []string {
	var out []string
	for _, role := range Roles {
		b, err := os.ReadFile(filepath.Join(root, unitDir, Unit(role)))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			cmd, ok := strings.CutPrefix(line, "ExecStart=")
			if !ok {
				continue
			}
			f := strings.Fields(cmd)
			for i, a := range f {
				switch {
				case (a == "--data-dir" || a == "-d") && i+1 < len(f):
					out = append(out, unquote(f[i+1]))
				case strings.HasPrefix(a, "--data-dir="):
					out = append(out, unquote(strings.TrimPrefix(a, "--data-dir=")))
				}
			}
		}
	}
	return out
}

func unquote(a string) string {
	if strings.HasPrefix(a, `"`) {
		a = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(strings.Trim(a, `"`))
	}
	return strings.NewReplacer("%%", "%", "$$", "$").Replace(a)
}

// inUse says why dirs cannot be removed yet: a process of the installed
// binary or bundle still runs (containerd, shims and pods outlive the
// service: KillMode=process), or something is mounted below them (pods'
// volumes and root filesystems), which removing would reach through.
func inUse(root string, dirs []string) error {
	lib := filepath.Join(root, libDir) + "/"
	var pids []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if exe, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe")); err == nil && strings.HasPrefix(exe, lib) {
			pids = append(pids, p.Name())
		}
	}
	if len(pids) > 0 {
		return fmt.Errorf("hakube's processes still run (pids %s): containerd, its shims and the pods outlive the service; "+
			"stop them (or reboot) before removing the data", strings.Join(pids, " "))
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if mp := f[4]; mp == d || strings.HasPrefix(mp, strings.TrimSuffix(d, "/")+"/") {
				return fmt.Errorf("%s is mounted below %s (a pod's volume or root filesystem): unmount it (or reboot) before removing the data", mp, d)
			}
		}
	}
	return nil
}
