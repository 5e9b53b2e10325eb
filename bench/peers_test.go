package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/test/harness"
)

// proc is a peer's process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, dir, logPath string, argv ...string) *proc {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) kill() { p.signal(syscall.SIGKILL) }
func (p *proc) stop() { p.signal(syscall.SIGTERM) }

// etcdPeer is a 3-member cluster of Debian's etcd, each member on its own
// namespace host with TLS between peers and to clients, as an external etcd
// for Kubernetes is set up; host 4 runs a hakube server in front of it.
type etcdPeer struct {
	t       *testing.T
	nw      *harness.Network
	dir     string
	tls     transport.TLSInfo
	members []*etcdMember
}

type etcdMember struct {
	name string
	host *harness.Host
	data string
	proc *proc
	id   uint64
}

func (m *etcdMember) peerURL() string   { return "https://" + net.JoinHostPort(m.host.IP, "2380") }
func (m *etcdMember) clientURL() string { return "https://" + net.JoinHostPort(m.host.IP, "2379") }

func startPeerEtcd(t *testing.T, _ plan) *target {
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("etcd is not on PATH; install Debian's etcd-server package (apt-get install etcd-server)")
	}
	e := &etcdPeer{t: t, nw: harness.NewNetwork(t, 4), dir: t.TempDir()}
	ca, err := pki.NewCA("bench-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(e.dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	client := pki.Leaf{CommonName: "bench-client", Usage: pki.ClientAuth}
	e.tls = transport.TLSInfo{TrustedCAFile: caFile, CertFile: filepath.Join(e.dir, "client.crt"), KeyFile: filepath.Join(e.dir, "client.key")}
	if err := ca.IssueFiles(client, e.tls.CertFile, e.tls.KeyFile); err != nil {
		t.Fatal(err)
	}
	for i, h := range e.nw.Hosts[:3] {
		m := &etcdMember{name: fmt.Sprintf("m%d", i+1), host: h, data: filepath.Join(e.dir, fmt.Sprintf("m%d", i+1))}
		leaf := pki.Leaf{CommonName: m.name, IPs: []net.IP{net.ParseIP(h.IP), net.ParseIP("127.0.0.1")}, Usage: pki.ServerAuth | pki.ClientAuth}
		if err := ca.IssueFiles(leaf, e.file(m, "crt"), e.file(m, "key")); err != nil {
			t.Fatal(err)
		}
		e.members = append(e.members, m)
	}
	for _, h := range e.nw.Hosts[1:] {
		h.CheckRoute(t, e.nw.Hosts[0].IP)
	}
	began := time.Now()
	e.startAll()
	e.waitWritable()
	cold := time.Since(began).Seconds()

	front := e.nw.Hosts[3].Server(t, "front")
	var urls []string
	for _, m := range e.members {
		urls = append(urls, m.clientURL())
	}
	front.Args = append(front.Args, "--datastore-endpoint", strings.Join(urls, ","),
		"--datastore-cafile", caFile, "--datastore-certfile", e.tls.CertFile, "--datastore-keyfile", e.tls.KeyFile)
	front.Start()

	leader := e.leader()
	tg := &target{name: peerEtcd, serializable: true, compacts: true, kube: front, peer: e, cold: []float64{cold},
		procs:  "3 etcd members and 1 hakube server in front (control plane)",
		writer: e.client(leader.host, leader), watcher: e.client(e.other(leader).host, e.other(leader))}
	tg.pids = func() []int {
		pids := serverPids([]*harness.Server{front})
		for _, m := range e.members {
			if m.proc != nil {
				pids = append(pids, m.proc.cmd.Process.Pid)
			}
		}
		return pids
	}
	return tg
}

func (e *etcdPeer) file(m *etcdMember, ext string) string {
	return filepath.Join(e.dir, m.name+"."+ext)
}

// start runs member m of the cluster in the given initial state.
func (e *etcdPeer) start(m *etcdMember, state string) {
	var initial []string
	for _, o := range e.members {
		initial = append(initial, o.name+"="+o.peerURL())
	}
	argv := append(m.host.Wrap(), "etcd", "--name", m.name, "--data-dir", m.data,
		"--listen-client-urls", m.clientURL(), "--advertise-client-urls", m.clientURL(),
		"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", state, "--initial-cluster-token", "bench",
		"--cert-file", e.file(m, "crt"), "--key-file", e.file(m, "key"), "--trusted-ca-file", e.tls.TrustedCAFile, "--client-cert-auth",
		"--peer-cert-file", e.file(m, "crt"), "--peer-key-file", e.file(m, "key"), "--peer-trusted-ca-file", e.tls.TrustedCAFile, "--peer-client-cert-auth",
		"--logger", "zap", "--log-level", "warn")
	m.proc = startProc(e.t, e.dir, filepath.Join(e.dir, m.name+".log"), argv...)
}

func (e *etcdPeer) startAll() {
	for _, m := range e.members {
		e.start(m, "new")
	}
}

func (e *etcdPeer) stopAll() {
	var wg sync.WaitGroup
	for _, m := range e.members {
		wg.Go(m.proc.stop)
	}
	wg.Wait()
}

// client reaches the members from host h.
func (e *etcdPeer) client(h *harness.Host, ms ...*etcdMember) *clientv3.Client {
	tlsCfg, err := e.tls.ClientConfig()
	if err != nil {
		e.t.Fatal(err)
	}
	var eps []string
	for _, m := range ms {
		h.CheckRoute(e.t, m.host.IP)
		eps = append(eps, m.clientURL())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return h.DialContext(ctx, "tcp", addr)
		})}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli
}

// waitWritable waits until a put through any member is acknowledged.
func (e *etcdPeer) waitWritable() {
	cli := e.client(e.members[0].host, e.members...)
	defer cli.Close()
	if err := untilPut(cli, time.Minute); err != nil {
		e.t.Fatalf("etcd cluster: %v\n%s", err, e.logTail())
	}
}

func untilPut(cli *clientv3.Client, within time.Duration) error {
	err := retry(within, time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/bench-ready", "x")
		return err
	})
	if err != nil {
		return fmt.Errorf("no put acknowledged in %s: %w", within, err)
	}
	return nil
}

func (e *etcdPeer) logTail() string {
	var b strings.Builder
	for _, m := range e.members {
		out, _ := os.ReadFile(filepath.Join(e.dir, m.name+".log"))
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		fmt.Fprintf(&b, "--- %s:\n%s\n", m.name, strings.Join(lines[max(0, len(lines)-10):], "\n"))
	}
	return b.String()
}

// leader asks each member who leads and records the members' ids.
func (e *etcdPeer) leader() *etcdMember {
	deadline := time.Now().Add(time.Minute)
	for {
		var lead uint64
		for _, m := range e.members {
			cli := e.client(m.host, m)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cli.Status(ctx, m.clientURL())
			cancel()
			cli.Close()
			if err == nil {
				m.id = st.Header.MemberId
				if st.Leader != 0 {
					lead = st.Leader
				}
			}
		}
		for _, m := range e.members {
			if m.id == lead && lead != 0 {
				return m
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("etcd cluster has no leader\n%s", e.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *etcdPeer) other(m *etcdMember) *etcdMember {
	for _, o := range e.members {
		if o != m {
			return o
		}
	}
	return nil
}

// peerEtcdOps times failover (through a follower and through the hakube
// server in front), a wiped member joining as a learner until promoted, and
// a cold start of the whole cluster until a write is acknowledged.
func peerEtcdOps(t *testing.T, p plan, tg *target, rep *Report) {
	e := tg.peer
	frontCS := kubeClient(t, tg.kube)
	var failDS, failKube, join []float64
	for range p.reps {
		leader := e.leader()
		f := e.other(leader)
		cli := e.client(f.host, f)
		took := failover(t, leader.proc.kill, dsWrite(cli), kubeWrite(frontCS))
		failDS, failKube = append(failDS, took[0]), append(failKube, took[1])

		// etcd refuses membership changes for a few seconds after a leader
		// change ("unhealthy cluster"); an operator retries, and so do we.
		if err := retry(time.Minute, 5*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
			_, err := cli.MemberRemove(ctx, leader.id)
			return err
		}); err != nil {
			t.Fatalf("removing %s: %v", leader.name, err)
		}
		if err := os.RemoveAll(leader.data); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		var added *clientv3.MemberAddResponse
		if err := retry(time.Minute, 5*time.Second, 200*time.Millisecond, func(ctx context.Context) (err error) {
			added, err = cli.MemberAddAsLearner(ctx, []string{leader.peerURL()})
			return err
		}); err != nil {
			t.Fatalf("adding %s: %v", leader.name, err)
		}
		leader.id = added.Member.ID
		e.start(leader, "existing")
		// Promotion is refused until the learner has caught up.
		if err := retry(3*time.Minute, 2*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
			_, err := cli.MemberPromote(ctx, leader.id)
			return err
		}); err != nil {
			t.Fatalf("promoting %s: %v\n%s", leader.name, err, e.logTail())
		}
		// As for hakube, a voter counts once it answers clients (healthy).
		joined := e.client(leader.host, leader)
		err := retry(3*time.Minute, time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			_, err := joined.Status(ctx, leader.clientURL())
			return err
		})
		joined.Close()
		if err != nil {
			t.Fatalf("%s after its promotion: %v\n%s", leader.name, err, e.logTail())
		}
		join = append(join, time.Since(began).Seconds())
		cli.Close()
	}
	addOp(t, rep, tg.name, "failover: first write acknowledged (datastore)", failDS)
	addOp(t, rep, tg.name, "failover: first write acknowledged (apiserver)", failKube)
	addOp(t, rep, tg.name, "join to voter", join)

	tg.kube.Stop()
	e.stopAll()
	cold := tg.cold
	for len(cold) < p.reps {
		for _, m := range e.members {
			if err := os.RemoveAll(m.data); err != nil {
				t.Fatal(err)
			}
		}
		began := time.Now()
		e.startAll()
		e.waitWritable()
		cold = append(cold, time.Since(began).Seconds())
		e.stopAll()
	}
	addOp(t, rep, tg.name, "cold start to first write", cold)
}

// retry calls fn, each call given at most timeout, every so often until it
// succeeds or within has passed; it returns the last error.
func retry(within, timeout, every time.Duration, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := fn(ctx)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

// kineProc is kine's own binary on SQLite, as K3s runs it by default.
type kineProc struct {
	bin, dir string
	port     int
	proc     *proc
}

func kineBinary(t *testing.T) string {
	bin := os.Getenv("HAKUBE_KINE")
	if bin == "" {
		t.Fatal("HAKUBE_KINE is not set; 'make bench' builds bin/kine and sets it")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kine binary: %v; 'make bench' builds it", err)
	}
	return bin
}

// start runs kine on a fresh database and waits until it acknowledges a put.
func (k *kineProc) start(t *testing.T) *clientv3.Client {
	k.dir = t.TempDir()
	k.proc = startProc(t, k.dir, filepath.Join(k.dir, "kine.log"), k.bin,
		"--listen-address", "127.0.0.1:"+strconv.Itoa(k.port), "--metrics-bind-address", "0")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:" + strconv.Itoa(k.port)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if err := untilPut(cli, time.Minute); err != nil {
		out, _ := os.ReadFile(filepath.Join(k.dir, "kine.log"))
		t.Fatalf("kine: %v\n%s", err, out)
	}
	return cli
}

func startKine(t *testing.T, _ plan) *target {
	k := &kineProc{bin: kineBinary(t), port: harness.FreePortPair(t)}
	began := time.Now()
	cli := k.start(t)
	cold := time.Since(began).Seconds()
	front := harness.NewServer(t, "front")
	front.Args = append(front.Args, "--datastore-endpoint", "http://127.0.0.1:"+strconv.Itoa(k.port))
	front.Start()
	return &target{name: peerKine, writer: cli, watcher: cli, kube: front, kine: k, cold: []float64{cold},
		procs: "kine and 1 hakube server in front (control plane)",
		pids: func() []int {
			return append(serverPids([]*harness.Server{front}), k.proc.cmd.Process.Pid)
		}}
}

// kineOps times kine's cold start on a fresh database until a write is
// acknowledged.
func kineOps(t *testing.T, p plan, tg *target, rep *Report) {
	tg.kube.Stop()
	tg.kine.proc.stop()
	cold := tg.cold
	for len(cold) < p.reps {
		began := time.Now()
		cli := tg.kine.start(t)
		cold = append(cold, time.Since(began).Seconds())
		cli.Close()
		tg.kine.proc.stop()
	}
	addOp(t, rep, tg.name, "cold start to first write", cold)
}
