package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartPostgres runs a real PostgreSQL server from Debian's packages on a free
// loopback port, as the postgres user.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	RequireRoot(t)
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
	}
	binDir := filepath.Dir(bins[len(bins)-1])
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	// Not t.TempDir: its parents are 0700 and postgres must reach its directory.
	dir, err := os.MkdirTemp("", "hakube-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dataDir, uid, gid); err != nil {
		t.Fatal(err)
	}
	asPostgres := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(binDir, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setpgid: true}
		cmd.Dir = dir
		return cmd
	}
	if out, err := asPostgres("initdb", "-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePortPair(t)
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := asPostgres("postgres", "-D", dataDir, "-p", strconv.Itoa(port), "-k", dataDir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logFile.Close()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("postgres did not listen on %s:\n%s", addr, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return &Postgres{DSN: fmt.Sprintf("postgres://postgres@%s/kubernetes?sslmode=disable", addr), pgid: cmd.Process.Pid}
}

// Postgres is a running PostgreSQL server.
type Postgres struct {
	DSN  string
	pgid int // the postmaster's process ID and group
}

// Freeze stops every PostgreSQL process (SIGSTOP): a database that hangs.
func (p *Postgres) Freeze() error { return p.signalAll(syscall.SIGSTOP) }

// Thaw resumes them.
func (p *Postgres) Thaw() error { return p.signalAll(syscall.SIGCONT) }

// signalAll signals the postmaster and its children, which PostgreSQL puts
// in process groups of their own.
func (p *Postgres) signalAll(sig syscall.Signal) error {
	pids := []int{p.pgid}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(p.pgid) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil {
			return err
		}
	}
	return nil
}
