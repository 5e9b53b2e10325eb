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
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync")
	initdb.SysProcAttr, initdb.Dir = &syscall.SysProcAttr{Credential: cred}, dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := strconv.Itoa(FreePortPair(t))
	addr := net.JoinHostPort("127.0.0.1", port)
	p := newProcess(t, "postgres", filepath.Join(dir, "postgres.log"))
	p.bin, p.dir, p.cred, p.readyTimeout = filepath.Join(binDir, "postgres"), dir, cred, 30*time.Second
	p.Args = []string{"-D", dataDir, "-p", port, "-k", dataDir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"}
	// A probe, not a ready line: PostgreSQL may translate its log messages.
	p.ready = func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	p.Start()
	return &Postgres{DSN: fmt.Sprintf("postgres://postgres@%s/kubernetes?sslmode=disable", addr), postmaster: p}
}

// Postgres is a running PostgreSQL server.
type Postgres struct {
	DSN        string
	postmaster *Process
}

// Freeze stops every PostgreSQL process (SIGSTOP): a database that hangs.
func (p *Postgres) Freeze() error { return p.signalAll(syscall.SIGSTOP) }

// Thaw resumes them.
func (p *Postgres) Thaw() error { return p.signalAll(syscall.SIGCONT) }

// signalAll signals the postmaster and its children, which PostgreSQL puts
// in process groups of their own.
func (p *Postgres) signalAll(sig syscall.Signal) error {
	pgid := p.postmaster.Pid() // the postmaster's process ID and group
	pids := []int{pgid}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pgid) {
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
