// Package etcd runs an embedded etcd member: a new one-member cluster, a member
// joining an existing cluster as a learner, or a member restarting from its data.
package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/netutil"
	"github.com/hakube/hakube/internal/pki"
)

// Certificate names in the TLS directory.
const (
	ServerCert = "etcd/server"
	PeerCert   = "etcd/peer"
	ClientCert = "etcd/client"
)

// Config configures an embedded etcd member.
type Config struct {
	// Dir holds the member's data.
	Dir      string
	NodeName string
	NodeIP   net.IP
	TLSDir   pki.Dir
	// ClientPort and PeerPort default to 2379 and 2380.
	ClientPort, PeerPort int
	// JoinEndpoints are client URLs of an existing cluster to join as a learner.
	// Empty creates a new cluster. Ignored when member data exists (restart).
	JoinEndpoints []string
	// HeartbeatMs and ElectionMs tune raft; defaults 100 and 1000, etcd's
	// own. A follower stands for election 1-2 s after the leader's last
	// heartbeat, so a write waits about 1.5 s for a new leader after a crash
	// (bench: 4.2 s at 300 and 3000). The cost: etcd's leader sends
	// heartbeats between its disk writes, so a leader whose fsync stalls for
	// over a second may be replaced; --etcd-arg election-timeout=5000 (K3s's)
	// tolerates slower disks.
	HeartbeatMs, ElectionMs uint
	// ForceNewCluster makes a restarting member the only member of its
	// cluster, keeping its data (recovery from a lost quorum).
	ForceNewCluster bool
	// Args are etcd settings as key=value, named as in etcd's configuration
	// file (quota-backend-bytes=4294967296); they override hakube's.
	Args []string
}

func (c *Config) setDefaults() {
	if c.ClientPort == 0 {
		c.ClientPort = 2379
	}
	if c.PeerPort == 0 {
		c.PeerPort = DefaultPeerPort
	}
	if c.HeartbeatMs == 0 {
		c.HeartbeatMs = 100
	}
	if c.ElectionMs == 0 {
		c.ElectionMs = 1000
	}
}

// DefaultPeerPort carries the members' Raft traffic.
const DefaultPeerPort = 2380

// HasData reports whether a member's data exists in dir.
func HasData(dir string) bool { return fsutil.Exists(filepath.Join(dir, "member")) }

// MemberName returns the member name stored in dir, if any.
func MemberName(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "name"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// LocalEndpoint is how processes on this server reach the local member.
func LocalEndpoint(tlsDir pki.Dir, clientPort int) datastore.Endpoint {
	if clientPort == 0 {
		clientPort = 2379
	}
	return datastore.Endpoint{
		URLs:     []string{"https://127.0.0.1:" + strconv.Itoa(clientPort)},
		CAFile:   tlsDir.Cert(pki.EtcdServerCA),
		CertFile: tlsDir.Cert(ClientCert),
		KeyFile:  tlsDir.Key(ClientCert),
	}
}

// Etcd is the embedded etcd datastore component.
type Etcd struct {
	cfg     Config
	name    string
	etcd    *embed.Etcd
	removed chan struct{}
	// joined is set when this start added the member as a learner.
	joined bool
	// quota is the database size at which etcd raises NOSPACE; noSpaceAt
	// is when the alarm was last seen (Unix ns).
	quota          int64
	noSpaceAt      atomic.Int64
	stopBackground context.CancelFunc
	backgroundDone sync.WaitGroup
}

// New returns an embedded etcd member.
func New(cfg Config) *Etcd {
	cfg.setDefaults()
	return &Etcd{cfg: cfg, removed: make(chan struct{})}
}

// JoinVia makes a member without data join the cluster at these client URLs;
// it is called before Start by whoever fetched the cluster's material.
func (e *Etcd) JoinVia(endpoints []string) { e.cfg.JoinEndpoints = endpoints }

// Name implements component.Component.
func (e *Etcd) Name() string { return "datastore (embedded etcd)" }

// Kind implements datastore.Datastore.
func (e *Etcd) Kind() datastore.Kind { return datastore.Etcd }

// Endpoint implements datastore.Datastore: the local member only, as K3s does.
func (e *Etcd) Endpoint() datastore.Endpoint { return LocalEndpoint(e.cfg.TLSDir, e.cfg.ClientPort) }

func (e *Etcd) peerURL() string {
	return "https://" + net.JoinHostPort(e.cfg.NodeIP.String(), strconv.Itoa(e.cfg.PeerPort))
}

func (e *Etcd) clientURL(host string) string {
	return "https://" + net.JoinHostPort(host, strconv.Itoa(e.cfg.ClientPort))
}

// Init checks that the etcd ports are free.
func (e *Etcd) Init(context.Context) error {
	type port struct {
		host string
		port int
		what string
	}
	ports := []port{{"127.0.0.1", e.cfg.ClientPort, "etcd client port"}, {e.cfg.NodeIP.String(), e.cfg.PeerPort, "etcd peer port"}}
	if !e.cfg.NodeIP.IsLoopback() {
		ports = append(ports, port{e.cfg.NodeIP.String(), e.cfg.ClientPort, "etcd client port"})
	}
	for _, p := range ports {
		if err := netutil.CheckPortFree(p.host, p.port, p.what); err != nil {
			return err
		}
	}
	return nil
}

// Start mints this member's certificates, joins the cluster as a learner when
// asked to, and starts etcd.
func (e *Etcd) Start(ctx context.Context) error {
	if err := e.mintCerts(); err != nil {
		return err
	}
	dir := e.cfg.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg, err := e.embedConfig()
	if err != nil {
		return err
	}
	switch {
	case HasData(e.cfg.Dir):
		e.name = MemberName(e.cfg.Dir)
		klog.Infof("etcd: restarting member %s from %s", e.name, dir)
		if e.cfg.ForceNewCluster {
			klog.Infof("etcd: making member %s the only member of its cluster, keeping its data", e.name)
			cfg.ForceNewCluster = true
		}
	case len(e.cfg.JoinEndpoints) == 0:
		e.name = e.newName()
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.InitialCluster = e.name + "=" + e.peerURL()
		klog.Infof("etcd: creating a new cluster with member %s at %s", e.name, e.peerURL())
	default:
		e.name = e.newName()
		initial, err := e.addLearner(ctx)
		if err != nil {
			return err
		}
		cfg.ClusterState = embed.ClusterStateFlagExisting
		cfg.InitialCluster = initial
		e.joined = true
	}
	if e.name == "" {
		return fmt.Errorf("etcd data in %s has no member name file; restore it or move the directory away to rejoin", dir)
	}
	if err := fsutil.WriteFile(filepath.Join(dir, "name"), []byte(e.name+"\n"), 0o600); err != nil {
		return err
	}
	return e.launch(cfg)
}

// embedConfig is etcd's configuration for this member, before the cluster
// settings of a first start.
func (e *Etcd) embedConfig() (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Dir = e.cfg.Dir
	cfg.TickMs, cfg.ElectionMs = e.cfg.HeartbeatMs, e.cfg.ElectionMs
	peer, _ := url.Parse(e.peerURL())
	loopback, _ := url.Parse(e.clientURL("127.0.0.1"))
	public, _ := url.Parse(e.clientURL(e.cfg.NodeIP.String()))
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls = []url.URL{*loopback}
	if !e.cfg.NodeIP.IsLoopback() {
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, *public)
	}
	cfg.AdvertiseClientUrls = []url.URL{*public}
	cfg.ListenMetricsUrls = nil
	t := e.cfg.TLSDir
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = t.Cert(ServerCert), t.Key(ServerCert)
	cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = t.Cert(pki.EtcdServerCA), true
	cfg.PeerTLSInfo.CertFile, cfg.PeerTLSInfo.KeyFile = t.Cert(PeerCert), t.Key(PeerCert)
	cfg.PeerTLSInfo.TrustedCAFile, cfg.PeerTLSInfo.ClientCertAuth = t.Cert(pki.EtcdPeerCA), true
	cfg.AutoCompactionMode, cfg.AutoCompactionRetention = embed.CompactorModePeriodic, "5m"
	cfg.QuotaBackendBytes = 8 << 30
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(e.logger())
	if err := applyArgs(cfg, e.cfg.Args); err != nil {
		return nil, err
	}
	e.quota = cfg.QuotaBackendBytes
	return cfg, nil
}

func (e *Etcd) launch(cfg *embed.Config) error {
	cfg.Name = e.name
	cfg.InitialClusterToken = "hakube"
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	e.etcd = etcd
	return nil
}

// restart stops the member and starts it again from its data. The server
// stops first: Close alone waits for a member that is not serving yet to
// serve (5.6 s in the bench).
func (e *Etcd) restart() error {
	e.etcd.Server.HardStop()
	e.etcd.Close()
	cfg, err := e.embedConfig()
	if err != nil {
		return err
	}
	return e.launch(cfg)
}

func (e *Etcd) newName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return e.cfg.NodeName + "-" + hex.EncodeToString(b)
}

func (e *Etcd) mintCerts() error {
	t := e.cfg.TLSDir
	serverCA, err := t.LoadCA(pki.EtcdServerCA)
	if err != nil {
		return err
	}
	peerCA, err := t.LoadCA(pki.EtcdPeerCA)
	if err != nil {
		return err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), e.cfg.NodeIP}
	dns := []string{"localhost", e.cfg.NodeName}
	if err := serverCA.IssueFiles(pki.Leaf{CommonName: "etcd-server", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth | pki.ClientAuth}, t.Cert(ServerCert), t.Key(ServerCert)); err != nil {
		return err
	}
	if err := peerCA.IssueFiles(pki.Leaf{CommonName: "etcd-peer", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth | pki.ClientAuth}, t.Cert(PeerCert), t.Key(PeerCert)); err != nil {
		return err
	}
	return serverCA.IssueFiles(pki.Leaf{CommonName: "etcd-client", Usage: pki.ClientAuth}, t.Cert(ClientCert), t.Key(ClientCert))
}

// addLearner adds this member to the existing cluster as a learner and returns
// the initial-cluster string to start with. etcd allows one learner at a time,
// so a concurrent join waits its turn instead of failing.
func (e *Etcd) addLearner(ctx context.Context) (string, error) {
	cli, err := e.joinClient()
	if err != nil {
		return "", err
	}
	defer cli.Close()
	var waitingSince time.Time
	for {
		if err := e.removeStaleSelf(ctx, cli); err != nil {
			return "", err
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cli.MemberAddAsLearner(actx, []string{e.peerURL()})
		cancel()
		if err == nil {
			klog.Infof("etcd: added as learner %x (%s); %d members in the cluster", resp.Member.ID, e.peerURL(), len(resp.Members))
			var parts []string
			for _, m := range resp.Members {
				name := m.Name
				if m.ID == resp.Member.ID {
					name = e.name
				}
				for _, u := range m.PeerURLs {
					parts = append(parts, name+"="+u)
				}
			}
			return strings.Join(parts, ","), nil
		}
		// The first two mean another join is in progress: one learner at a
		// time, and no member added while an added one has not started yet.
		// A timeout (the cluster busy with that other join's changes), ours
		// or etcd's own ("etcdserver: request timed out, possibly due to
		// connection lost", seen when two servers rejoin a reset cluster at
		// once), may have added us anyway: the next round removes that
		// member first.
		timedOut := (strings.Contains(err.Error(), "deadline exceeded") || strings.Contains(err.Error(), "etcdserver: request timed out")) &&
			ctx.Err() == nil
		if !strings.Contains(err.Error(), "too many learner members") && !strings.Contains(err.Error(), "unhealthy cluster") && !timedOut {
			return "", fmt.Errorf("adding this server to the etcd cluster: %w", err)
		}
		if waitingSince.IsZero() || time.Since(waitingSince) > 15*time.Second {
			klog.Infof("etcd: another server is joining (%v); waiting for its turn", err)
			waitingSince = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// joinClient reaches the cluster this member joins through.
func (e *Etcd) joinClient() (*clientv3.Client, error) {
	return datastore.Client(datastore.Endpoint{
		URLs: e.cfg.JoinEndpoints, CAFile: e.cfg.TLSDir.Cert(pki.EtcdServerCA),
		CertFile: e.cfg.TLSDir.Cert(ClientCert), KeyFile: e.cfg.TLSDir.Key(ClientCert),
	})
}

// removeStaleSelf removes a member left with our peer URL by an earlier attempt
// that never started (we have no data, so it cannot be a live us).
func (e *Etcd) removeStaleSelf(ctx context.Context, cli *clientv3.Client) error {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(lctx)
	if err != nil {
		return fmt.Errorf("listing etcd members at %v: %w", e.cfg.JoinEndpoints, err)
	}
	for _, m := range resp.Members {
		for _, u := range m.PeerURLs {
			if u != e.peerURL() {
				continue
			}
			klog.Infof("etcd: removing stale member %x (%q) that holds this server's peer URL", m.ID, m.Name)
			if _, err := cli.MemberRemove(lctx, m.ID); err != nil {
				return fmt.Errorf("removing stale member %x with this server's peer URL: %w", m.ID, err)
			}
		}
	}
	return nil
}

// Ready waits until the member serves and, for a joiner, until it is promoted
// to voter. Progress is logged while it waits (for quorum, or to catch up).
func (e *Etcd) Ready(ctx context.Context) error {
	began := time.Now()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	var publishedAt time.Time
	restarted := false
wait:
	for {
		select {
		case <-e.etcd.Server.ReadyNotify():
			break wait
		case err := <-e.etcd.Err():
			return fmt.Errorf("etcd failed: %w", err)
		case <-e.etcd.Server.StopNotify():
			return e.stoppedError()
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			klog.Infof("etcd: waiting for a quorum of members (%s so far); the cluster serves once a majority of servers is up", time.Since(began).Round(time.Second))
		case <-check.C:
			if !e.joined || restarted || !e.published() {
				continue
			}
			if publishedAt.IsZero() {
				publishedAt = time.Now()
				continue
			}
			// A publish applied from the log makes etcd serve within
			// milliseconds of the apply.
			if time.Since(publishedAt) < 500*time.Millisecond {
				continue
			}
			// A learner that catches up by snapshot applies its own publish
			// inside that snapshot, and etcd then waits for an answer that
			// never comes: it serves only when the request times out, after
			// 5 s + 2 election timeouts, and asks again (bench: every join
			// took 11.3 s at a 3 s election timeout). Started again from its
			// data, it publishes at once.
			klog.Infof("etcd: the learner's publish arrived in the leader's snapshot; restarting it to serve now")
			if err := e.restart(); err != nil {
				return err
			}
			restarted = true
		}
	}
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		return err
	}
	defer cli.Close()
	if e.joined {
		if err := e.waitPromoted(ctx, cli); err != nil {
			return err
		}
	}
	e.warnEven(ctx, cli)
	// Out of space, the control plane cannot start (its components write):
	// recover first, or say why not.
	if raised, still := e.handleNoSpace(ctx, cli); raised && still {
		return fmt.Errorf("etcd is out of space (NOSPACE alarm) and compaction and defragmentation did not free enough: "+
			"start the servers with a larger --etcd-arg quota-backend-bytes=<bytes> (now %d)", e.quota)
	}
	pctx, cancel := context.WithCancel(context.Background())
	e.stopBackground = cancel
	e.backgroundDone.Add(2)
	go func() {
		defer e.backgroundDone.Done()
		e.promoteLearners(pctx)
	}()
	go func() {
		defer e.backgroundDone.Done()
		e.hygiene(pctx)
	}()
	return nil
}

func (e *Etcd) memberID() uint64 { return uint64(e.etcd.Server.MemberID()) }

// published reports whether this member's state already holds its own
// published name.
func (e *Etcd) published() bool {
	m := e.etcd.Server.Cluster().Member(e.etcd.Server.MemberID())
	return m != nil && m.Name == e.name
}

// waitPromoted asks the cluster to promote this learner until it is a voter,
// logging catch-up progress. etcd refuses a learner that is not in sync yet,
// which is retried; the leader's promoter (promoteLearners) does the same
// for learners whose joiner is gone.
func (e *Etcd) waitPromoted(ctx context.Context, cli *clientv3.Client) error {
	join, err := e.joinClient()
	if err != nil {
		return err
	}
	defer join.Close()
	lastLog := time.Now()
	for {
		if !e.etcd.Server.IsLearner() {
			klog.Infof("etcd: promoted to voter")
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := join.MemberPromote(pctx, e.memberID())
		cancel()
		if err != nil && time.Since(lastLog) > 5*time.Second {
			applied, leaderIndex := e.progress(ctx, cli)
			klog.Infof("etcd: learner catching up: applied index %d of %d; waiting for promotion (%v)", applied, leaderIndex, err)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.etcd.Server.StopNotify():
			return e.stoppedError()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (e *Etcd) progress(ctx context.Context, cli *clientv3.Client) (applied, leaderIndex uint64) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := cli.Status(sctx, e.Endpoint().URLs[0])
	if err != nil {
		return 0, 0
	}
	return st.RaftAppliedIndex, st.RaftIndex
}

// promoteLearners runs on every member; the leader promotes learners that have
// caught up (etcd refuses a learner that is not in sync, which we just retry).
func (e *Etcd) promoteLearners(ctx context.Context) {
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		klog.Errorf("etcd: learner promoter: %v", err)
		return
	}
	defer cli.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		if uint64(e.etcd.Server.Leader()) != e.memberID() {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.MemberList(lctx)
		if err == nil {
			for _, m := range resp.Members {
				if !m.IsLearner {
					continue
				}
				if _, err := cli.MemberPromote(lctx, m.ID); err == nil {
					klog.Infof("etcd: promoted learner %x (%s) to voter", m.ID, m.Name)
				} else {
					klog.V(2).Infof("etcd: learner %x not promoted yet: %v", m.ID, err)
				}
			}
		}
		cancel()
	}
}

// warnEven warns when the number of voters is even: one more server adds no
// failure tolerance, and two servers tolerate none.
func (e *Etcd) warnEven(ctx context.Context, cli *clientv3.Client) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return
	}
	voters := 0
	for _, m := range resp.Members {
		if !m.IsLearner {
			voters++
		}
	}
	if voters%2 == 0 {
		klog.Warningf("etcd: the cluster has %d servers, which tolerate %d failures (as many as %d servers); use an odd number of servers",
			voters, (voters-1)/2, voters-1)
	}
}

// Failed implements component.Failer: it yields why the member stopped
// (ErrRemoved when etcd reported this member removed from the cluster).
func (e *Etcd) Failed() <-chan error {
	stopped, ch := e.etcd.Server.StopNotify(), make(chan error, 1)
	go func() {
		<-stopped
		ch <- e.stoppedError()
	}()
	return ch
}

func (e *Etcd) stoppedError() error {
	select {
	case <-e.removed:
		return ErrRemoved
	default:
		return errors.New("embedded etcd stopped; see the log above")
	}
}

// ErrRemoved means this member was removed from the cluster.
var ErrRemoved = errors.New("this server was removed from the etcd cluster. To rejoin, restart it with --server https://<another server>:6443 " +
	"(its old etcd data is moved aside as a backup); to make it a new cluster instead, move <data-dir>/server/db/etcd away and start with --cluster-init")

// Stop closes the member.
func (e *Etcd) Stop() error {
	if e.stopBackground != nil {
		e.stopBackground()
		e.backgroundDone.Wait()
		e.stopBackground = nil
	}
	if e.etcd != nil {
		e.etcd.Close()
		e.etcd = nil
	}
	return nil
}

// logger is etcd's zap logger, at warning level, with a hook that notices the
// error etcd logs when it finds itself removed from the cluster.
func (e *Etcd) logger() *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(os.Stderr), zapcore.WarnLevel)
	var once sync.Once
	return zap.New(&removalHook{Core: core, onRemoved: func() { once.Do(func() { close(e.removed) }) }})
}

type removalHook struct {
	zapcore.Core
	onRemoved func()
}

func (h *removalHook) With(fields []zapcore.Field) zapcore.Core {
	return &removalHook{Core: h.Core.With(fields), onRemoved: h.onRemoved}
}

func (h *removalHook) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if h.Enabled(ent.Level) {
		return ce.AddCore(ent, h)
	}
	return ce
}

func (h *removalHook) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	for _, f := range fields {
		if f.Type == zapcore.ErrorType {
			if err, ok := f.Interface.(error); ok && strings.Contains(err.Error(), "permanently removed") {
				h.onRemoved()
			}
		}
	}
	return h.Core.Write(ent, fields)
}
