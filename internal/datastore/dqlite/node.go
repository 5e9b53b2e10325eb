// Package dqlite is hakube's Dqlite mode: the Kubernetes key/value data in
// SQLite, replicated by Raft (hashicorp/raft) on every server, served to the
// apiserver through kine's etcd API over our own backend.
//
// Compared with dqlite and kine: reads are linearizable (read index checked
// with the leader, never a stale read from a deposed leader), followers
// forward writes to the leader, watches are fed from the applied log on every
// member, and the Raft log is compacted with SQLite snapshots.
package dqlite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/pki"
)

// Config configures one member.
type Config struct {
	// Dir holds the Raft log, snapshots and the SQLite state.
	Dir string
	// ID is the member's name in the cluster, unique and stable.
	ID string
	// Listen is the peer address to bind; Advertise what the others dial.
	Listen, Advertise string
	// Peer TLS files: the cluster's peer CA and this member's certificate,
	// valid for both server and client use.
	CAFile, CertFile, KeyFile string
	// Bootstrap starts a new cluster with this member alone.
	Bootstrap bool
	// Join is a member's peer address to ask for membership when the member
	// has no state yet.
	Join string
	// RestoreFrom is a staged snapshot (Stage) that starts a new cluster with
	// this member alone, instead of an empty one.
	RestoreFrom string
	// Recover makes a member with state the only member of its cluster,
	// keeping its data (recovery from a lost quorum).
	Recover bool
	// Timing; zero values take the defaults.
	HeartbeatTimeout, ElectionTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot, checked
	// every SnapshotInterval.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// VacuumInterval is how often the leader looks for fragmented followers
	// to vacuum; zero disables it.
	VacuumInterval time.Duration
	// raftConn, if set, wraps this member's Raft connections (tests: the
	// network's view of a paused process).
	raftConn func(c net.Conn, dialed bool) net.Conn
}

// commitTimeout bounds how late a follower learns of a commit when writes
// pause (10-20 ms; bench: watch p50 19 ms); idle, it costs each follower
// ~70 small RPCs a second, half of what 5 ms (p50 12 ms) costs.
const commitTimeout = 10 * time.Millisecond

// NewConfig returns a config with the defaults. A follower stands for
// election 0.7-1.4 s after it last heard from the leader (hashicorp/raft
// randomizes the heartbeat timeout up to twice it), so that a write waits
// under 2 s for a new leader after a crash. hashicorp/raft sends heartbeats
// from their own goroutines, beside the log writes, so a slow disk does not
// delay them as it delays etcd's.
func NewConfig() Config {
	return Config{HeartbeatTimeout: 700 * time.Millisecond, ElectionTimeout: 700 * time.Millisecond, SnapshotThreshold: 4096,
		SnapshotInterval: time.Minute, VacuumInterval: 5 * time.Minute}
}

// Validate checks the config before anything is written.
func (c Config) Validate() error {
	switch {
	case c.Dir == "" || c.ID == "":
		return errors.New("dqlite: a directory and a member ID are required")
	case c.Listen == "" || c.Advertise == "":
		return errors.New("dqlite: listen and advertise addresses are required")
	case c.CAFile == "" || c.CertFile == "" || c.KeyFile == "":
		return errors.New("dqlite: peer TLS files are required")
	case c.Bootstrap && c.Join != "", c.RestoreFrom != "" && (c.Bootstrap || c.Join != ""):
		return errors.New("dqlite: a member either starts a cluster, restores one or joins one")
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		return fmt.Errorf("dqlite: advertise address %q: %w", c.Advertise, err)
	}
	return nil
}

// HasState reports whether dir holds a member's Raft state.
func HasState(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	return err == nil
}

// ErrNotLeader is returned when no leader is known or reachable.
var ErrNotLeader = errors.New("dqlite: no leader")

// Node is one running member.
type Node struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm
	mux   *mux
	rpc   *http.Server
	http  *http.Client
	logs  *raftboltdb.BoltStore
	trans *raft.NetworkTransport

	// leaderGen counts leadership changes; readyGen is the generation whose
	// barrier committed. Reads on a leader need them equal.
	leaderGen, readyGen atomic.Uint64
	reads               readBatches
	// putOK: every member applies opPut (putLoop).
	putOK       atomic.Bool
	stop        chan struct{}
	wg          sync.WaitGroup
	removed     chan struct{}
	removedOnce sync.Once
}

// Start opens the member's state and starts Raft. A member that joins asks
// the cluster for membership and is promoted to voter once caught up.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	fresh := !HasState(cfg.Dir)
	serverTLS, clientTLS, err := peerTLS(cfg)
	if err != nil {
		return nil, err
	}
	// The SQLite state is rebuilt from the snapshot and the log every start.
	statePath := filepath.Join(cfg.Dir, "state.db")
	if err := removeFiles(statePath); err != nil {
		return nil, err
	}
	st, err := openStore(statePath)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, fsm: newFSM(st), stop: make(chan struct{}), removed: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.Stop()
		}
	}()
	ln, err := tls.Listen("tcp", cfg.Listen, serverTLS)
	if err != nil {
		return nil, fmt.Errorf("dqlite peer port: %w", err)
	}
	n.mux = newMux(ln, clientTLS)
	adv, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
	if err != nil {
		return nil, err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "dqlite", Level: hclog.Warn, Output: klogWriter{}})
	sl := &streamLayer{listener: newListener(n.mux, n.mux.raftc), advertise: adv, wrap: cfg.raftConn}
	n.trans = raft.NewNetworkTransportWithLogger(sl, 3, 10*time.Second, logger)
	if n.logs, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")}); err != nil {
		return nil, fmt.Errorf("dqlite log store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, logger)
	if err != nil {
		return nil, err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = logger
	rc.HeartbeatTimeout, rc.ElectionTimeout = cfg.HeartbeatTimeout, cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	// A follower learns that an entry is committed only from the leader's
	// next AppendEntries, which hashicorp/raft sends after CommitTimeout
	// (randomized up to twice it) when no new entry comes: its default, 50 ms,
	// delayed watch events and read-index reads on followers by 50-100 ms
	// (bench: watch p50 76 ms). etcd sends the commit at once.
	rc.CommitTimeout = commitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.SnapshotThreshold
	switch {
	case fresh && cfg.RestoreFrom != "":
		if err := seed(cfg, cfg.RestoreFrom, snaps, n.logs, n.trans); err != nil {
			return nil, fmt.Errorf("dqlite: restoring: %w", err)
		}
	case !fresh && cfg.Recover:
		self := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(cfg.Advertise)}}}
		if err := raft.RecoverCluster(rc, n.fsm, n.logs, n.logs, snaps, n.trans, self); err != nil {
			return nil, fmt.Errorf("dqlite: making this member the only one: %w", err)
		}
		klog.Infof("dqlite: member %s is now the only member of its cluster, with its data", cfg.ID)
	}
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.logs, snaps, n.trans); err != nil {
		return nil, fmt.Errorf("dqlite: starting Raft: %w", err)
	}
	n.http = rpcClient(clientTLS)
	n.rpc = &http.Server{Handler: n.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.rpc.Serve(newListener(n.mux, n.mux.rpcc)) }()
	n.wg.Add(3)
	go n.watchLeadership(notify)
	go n.expireLoop()
	go n.vacuumLoop()

	if fresh && cfg.Bootstrap {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(cfg.Advertise)}}})
		if err := f.Error(); err != nil {
			return nil, fmt.Errorf("dqlite: bootstrapping: %w", err)
		}
	}
	if fresh && cfg.Join != "" {
		if err := n.join(ctx); err != nil {
			return nil, err
		}
	}
	// Only now: a joiner's membership is committed once join returns.
	n.wg.Add(3)
	go n.membershipLoop(!fresh)
	go n.promote()
	go n.putLoop()
	ok = true
	return n, nil
}

func peerTLS(cfg Config) (server, client *tls.Config, err error) {
	// Read again when renewed, at the next handshake.
	cert, err := pki.LoadKeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("dqlite peer certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("dqlite peer CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("dqlite peer CA %s holds no certificate", cfg.CAFile)
	}
	server = &tls.Config{GetCertificate: cert.GetCertificate, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{GetClientCertificate: cert.GetClientCertificate, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

// klogWriter sends Raft's log lines to klog.
type klogWriter struct{}

func (klogWriter) Write(p []byte) (int, error) {
	klog.InfoDepth(4, string(p))
	return len(p), nil
}

// Stop shuts the member down; its state stays on disk.
func (n *Node) Stop() {
	select {
	case <-n.stop:
		return
	default:
	}
	n.handOver()
	close(n.stop)
	// Requests in flight finish first, then Raft stops.
	if n.rpc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = n.rpc.Shutdown(ctx)
		cancel()
	}
	if n.raft != nil {
		_ = n.raft.Shutdown().Error()
	}
	if n.mux != nil {
		n.mux.close()
	}
	if n.trans != nil {
		_ = n.trans.Close()
	}
	n.wg.Wait()
	if n.logs != nil {
		_ = n.logs.Close()
	}
	n.fsm.hub.closeAll()
	_ = n.fsm.read(func(st *store) error { return st.close() })
}

// handOver makes another voter the leader before a leader stops, so that
// writes wait for one round of messages instead of an election timeout.
func (n *Node) handOver() {
	if n.raft == nil || n.raft.State() != raft.Leader {
		return
	}
	servers, _, ok := n.configuration()
	if !ok || !slices.ContainsFunc(servers, func(s raft.Server) bool { return s.Suffrage == raft.Voter && s.ID != raft.ServerID(n.cfg.ID) }) {
		return
	}
	began := time.Now()
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		klog.Warningf("dqlite: handing leadership over before stopping: %v", err)
		return
	}
	klog.Infof("dqlite: handed leadership over in %s before stopping", time.Since(began).Round(time.Millisecond))
}

// Fatal reports a state machine failure: the member must stop.
func (n *Node) Fatal() <-chan error { return n.fsm.fatal }

// Removed is closed when the member learns it is no longer in the cluster.
func (n *Node) Removed() <-chan struct{} { return n.removed }

// watchLeadership commits a barrier at the start of each leadership so that
// the commit index covers every entry of earlier terms before reads use it.
func (n *Node) watchLeadership(notify <-chan bool) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-notify:
			gen := n.leaderGen.Add(1)
			if !leader {
				continue
			}
			go func() {
				for {
					_, err := n.applyLocal(&command{Op: opBarrier}, 10*time.Second)
					if err == nil {
						for cur := n.readyGen.Load(); cur < gen && !n.readyGen.CompareAndSwap(cur, gen); cur = n.readyGen.Load() {
						}
						return
					}
					if n.leaderGen.Load() != gen || errors.Is(err, raft.ErrRaftShutdown) {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
	}
}

// applyLocal applies a command through this member, which must lead.
func (n *Node) applyLocal(c *command, timeout time.Duration) (*result, error) {
	c.Now = time.Now().UnixNano()
	f := n.raft.Apply(c.marshal(), timeout)
	if err := f.Error(); err != nil {
		// Refused before it reached the log: safe to retry. A lost leadership
		// is not: the entry may still commit.
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, fmt.Errorf("%w: %v", errNoLeaderYet, err)
		}
		return nil, err
	}
	res, _ := f.Response().(*result)
	if res == nil {
		return nil, errors.New("dqlite: no result from the state machine")
	}
	return res, nil
}

// apply runs a write: on the leader directly, else forwarded to it.
func (n *Node) apply(ctx context.Context, c *command) (*result, error) {
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	for {
		var res *result
		var err error
		if n.raft.State() == raft.Leader {
			timeout := 10 * time.Second
			if d, ok := ctx.Deadline(); ok {
				timeout = time.Until(d)
			}
			res, err = n.applyLocal(c, timeout)
		} else {
			res, err = n.forwardApply(ctx, c)
		}
		if err == nil {
			return res, res.err()
		}
		// Only a write that surely did not reach a leader is retried.
		if !errors.Is(err, errNoLeaderYet) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, ctx.Err())
		case <-time.After(retryPause):
		}
	}
}

// requestContext bounds how long a request waits for a leader, as etcd's
// server-side request timeout does, and ends it when the member stops: a
// request must not hold the apiserver's shutdown for its own deadline.
func (n *Node) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second+2*n.cfg.ElectionTimeout)
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// readIndex returns an index that covers every write acknowledged before the
// call, proven by a barrier entry that the leader committed after the call.
// VerifyLeader (a heartbeat round) cannot prove it: hashicorp/raft v1.7.3
// counts any successful AppendEntries answer that arrives after the call,
// and a leader resumed from a pause first reads the answers its followers
// sent before it, while they may since have elected a new leader and taken
// writes. A deposed leader cannot commit an entry: the voters that elected
// its successor refuse its term.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return n.forwardReadIndex(ctx)
	}
	// Not needed for safety (readBarrier checks terms itself): reads retry
	// instead of queueing behind a new leader's catch-up.
	if n.readyGen.Load() != n.leaderGen.Load() {
		return 0, fmt.Errorf("%w: the new leader has not committed its first entry yet", errNoLeaderYet)
	}
	b := n.reads.join(n.readBarrier)
	select {
	case <-b.done:
		return b.index, b.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: waiting for the read barrier: %v", ErrNotLeader, ctx.Err())
	}
}

// readBarrier commits a no-op entry through this member, which must lead,
// and returns a read index for the reads that arrived before the call.
func (n *Node) readBarrier() (uint64, error) {
	commit := n.raft.CommitIndex()
	f := n.raft.Apply((&command{Op: opBarrier}).marshal(), 10*time.Second)
	if err := f.Error(); err != nil {
		// A read has no effect: whatever became of the barrier, retry.
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return 0, fmt.Errorf("%w: read barrier: %v", errNoLeaderYet, err)
		}
		return 0, fmt.Errorf("dqlite: committing a read barrier: %w", err)
	}
	if res, _ := f.Response().(*result); res == nil || res.Err != "" {
		return 0, fmt.Errorf("dqlite: the state machine failed to apply read barrier %d", f.Index())
	}
	// The barrier's own index is always safe, but a follower learns that it
	// committed only from the next AppendEntries, 10-20 ms later
	// (commitTimeout). The commit index from before the barrier is enough
	// when its entry is of the barrier's term: it covers this leadership's
	// acknowledged writes, and earlier terms' entries all come before it.
	// Followers have mostly applied it already (bench: a read through a
	// follower 2.2 ms instead of 17).
	var at, barrier raft.Log
	if n.logs.GetLog(commit, &at) == nil && n.logs.GetLog(f.Index(), &barrier) == nil && at.Term == barrier.Term {
		return commit, nil
	}
	return f.Index(), nil
}

// readBatches shares one barrier among the reads that arrive while the
// previous barrier is in flight: a read never joins a barrier proposed
// before it arrived, and one barrier at a time is in flight, so a leader
// adds at most one log entry per commit round (~1-3 ms here) however many
// reads it serves, and one per read when reads come one at a time.
type readBatches struct {
	mu     sync.Mutex
	next   *readBatch // not proposed yet
	flying bool       // a proposer runs
}

type readBatch struct {
	done  chan struct{} // closed when index and err are set
	index uint64
	err   error
}

// join returns the batch of the next barrier, proposed with propose after
// the call.
func (r *readBatches) join(propose func() (uint64, error)) *readBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == nil {
		r.next = &readBatch{done: make(chan struct{})}
	}
	b := r.next
	if !r.flying {
		r.flying = true
		go r.run(propose)
	}
	return b
}

// run proposes the pending batches' barriers one after the other; it ends
// when none is left (after Raft's shutdown, propose fails at once).
func (r *readBatches) run(propose func() (uint64, error)) {
	for {
		r.mu.Lock()
		b := r.next
		r.next = nil
		r.flying = b != nil
		r.mu.Unlock()
		if b == nil {
			return
		}
		b.index, b.err = propose()
		close(b.done)
	}
}

// linearize waits until this member's state includes every write
// acknowledged before the call.
func (n *Node) linearize(ctx context.Context) error {
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	for {
		idx, err := n.readIndex(ctx)
		if err == nil {
			return n.fsm.waitApplied(ctx, idx)
		}
		if !errors.Is(err, errNoLeaderYet) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNotLeader, ctx.Err())
		case <-time.After(retryPause):
		}
	}
}

// catchUp lets a member's local view (membership, a snapshot) include what the
// cluster committed before the call, when a leader answers within a few
// seconds; without one the local view is all there is, so it is used as is.
func (n *Node) catchUp(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_ = n.linearize(ctx)
}

// errNoLeaderYet is a transient state worth a retry: an election or a new
// leader's first commit is under way.
var errNoLeaderYet = errors.New("dqlite: leader not ready")

// retryPause is the wait before a request tries a leader again. A leadership
// hand-over takes a few round trips; the 100 ms this was made writes wait
// 0.45 s for a leader that stopped gracefully (bench).
const retryPause = 20 * time.Millisecond

// expireLoop deletes keys whose lease ran out; only the leader proposes it,
// with its clock in the command.
func (n *Node) expireLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		var due bool
		_ = n.fsm.read(func(st *store) error {
			rows, err := st.expired(context.Background(), st.db, time.Now().UnixNano())
			due = err == nil && len(rows) > 0
			return err
		})
		if due {
			if _, err := n.applyLocal(&command{Op: opExpire}, 10*time.Second); err != nil {
				klog.V(2).Infof("dqlite: expiring leases: %v", err)
			}
		}
	}
}

// membershipLoop notices this member's removal from the cluster, whatever
// the timing. A member that restarts from its state was a member: if its
// configuration no longer holds it, it was removed before it stopped. A member
// started without state cannot tell from its own configuration: while it
// catches up it goes through the configurations from before its join, and
// its removal may arrive before it ever saw itself in one. When its
// configuration lacks it, it asks the leader. A member removed while it was
// down, or before the leader sent it anything, hears from no leader; after a
// few leaderless ticks it asks the leader among its peers.
func (n *Node) membershipLoop(restarted bool) {
	defer n.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	leaderless := 0
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		servers, in, ok := n.configuration()
		if !ok {
			continue
		}
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			leaderless = 0
		} else {
			leaderless++
		}
		var removed bool
		switch {
		case in || len(servers) == 0:
			removed = leaderless >= 3 && n.leaderDropped(servers)
		case restarted:
			removed = true
		default:
			// Also a removed leader: Raft shut down when the removal
			// committed (ShutdownOnRemove), its configuration stays readable.
			removed = n.leaderDropped(servers)
		}
		if removed {
			n.removedOnce.Do(func() { close(n.removed) })
		}
	}
}

// configuration is the latest Raft configuration's servers and whether this
// member is among them; ok is false when Raft cannot say.
func (n *Node) configuration() (servers []raft.Server, in, ok bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, false, false
	}
	servers = f.Configuration().Servers
	return servers, slices.ContainsFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(n.cfg.ID) }), true
}

// checkRemoved asks the leader now whether this member is still in the
// cluster, for a leader that says it removed it.
func (n *Node) checkRemoved() {
	servers, _, ok := n.configuration()
	if ok && n.leaderDropped(servers) {
		n.removedOnce.Do(func() { close(n.removed) })
	}
}

// leaderDropped reports whether the leader, found among the other servers of
// this member's configuration and the member it joined through (or where
// they say it is), lists the cluster's members without this one.
func (n *Node) leaderDropped(servers []raft.Server) bool {
	// Bounded, and ended when the member stops.
	rctx, rcancel := n.requestContext(context.Background())
	defer rcancel()
	var addrs []string
	for _, s := range servers {
		if s.ID != raft.ServerID(n.cfg.ID) {
			addrs = append(addrs, string(s.Address))
		}
	}
	if n.cfg.Join != "" && !slices.Contains(addrs, n.cfg.Join) {
		addrs = append(addrs, n.cfg.Join)
	}
	for i := 0; i < len(addrs); i++ {
		var st status
		ctx, cancel := context.WithTimeout(rctx, 2*time.Second)
		err := n.call(ctx, addrs[i], "GET", "/status", nil, &st)
		cancel()
		if err != nil || st.ID == n.cfg.ID {
			continue
		}
		if st.State != raft.Leader.String() {
			if st.LeaderAddress != "" && st.LeaderAddress != n.cfg.Advertise && !slices.Contains(addrs, st.LeaderAddress) {
				addrs = append(addrs, st.LeaderAddress)
			}
			continue
		}
		var members []Member
		if err := n.call(rctx, addrs[i], "GET", "/members", nil, &members); err != nil {
			return false
		}
		dropped := !slices.ContainsFunc(members, func(m Member) bool { return m.ID == n.cfg.ID })
		if dropped {
			klog.Infof("dqlite: leader %s no longer lists this member: it was removed", st.ID)
		}
		return dropped
	}
	return false
}
