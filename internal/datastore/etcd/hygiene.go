package etcd

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
)

// Hygiene settings: how often the alarm and the fragmentation are looked at,
// and how much of the database must be free space before it is defragmented.
// The alarm is checked often (a cheap local call): while it is raised every
// write fails, and the controller manager ends after 10 s without renewing
// its lease. Defragmentation blocks the member's reads and writes while it
// runs, so it is done rarely, on one member at a time, and only when it gives
// back a lot.
const (
	alarmCheckEvery  = 2 * time.Second
	fragCheckEvery   = 5 * time.Minute
	defragMinFree    = 64 << 20
	defragMinFreePct = 50
	defragLockKey    = "/hakube/locks/defrag"
)

// shouldDefrag says whether a database of size bytes, inUse of them holding
// data, is fragmented enough to be worth a defragmentation.
func shouldDefrag(size, inUse int64) bool {
	free := size - inUse
	return free >= defragMinFree && free*100 >= size*defragMinFreePct
}

// hygiene keeps the member's database usable: it recovers from the NOSPACE
// alarm (compact, defragment, disarm) and defragments when fragmentation
// is high.
func (e *Etcd) hygiene(ctx context.Context) {
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		klog.Warningf("etcd: database upkeep disabled: %v", err)
		return
	}
	defer cli.Close()
	tick := time.NewTicker(alarmCheckEvery)
	defer tick.Stop()
	lastFragCheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if raised, _ := e.handleNoSpace(ctx, cli); raised {
			continue
		}
		if time.Since(lastFragCheck) >= fragCheckEvery {
			lastFragCheck = time.Now()
			e.defragIfFragmented(ctx, cli)
		}
	}
}

// noSpaceAlarms lists the NOSPACE alarms raised, one per member that raised it.
func noSpaceAlarms(ctx context.Context, cli *clientv3.Client) []*etcdserverpb.AlarmMember {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cli.AlarmList(actx)
	if err != nil {
		return nil
	}
	var out []*etcdserverpb.AlarmMember
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			out = append(out, a)
		}
	}
	return out
}

// NoSpace reports whether the cluster is, or was in the last two minutes,
// out of space: a control-plane component that failed meanwhile failed for
// that reason, and is worth restarting now that it is being handled.
func (e *Etcd) NoSpace() bool {
	if t := e.noSpaceAt.Load(); t != 0 && time.Since(time.Unix(0, t)) < 2*time.Minute {
		return true
	}
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		return false
	}
	defer cli.Close()
	return len(noSpaceAlarms(context.Background(), cli)) > 0
}

// handleNoSpace recovers from the NOSPACE alarm, which makes the whole
// cluster refuse writes: old revisions are compacted away, this member is
// defragmented, and the alarm is disarmed once the database fits its quota.
// It reports whether the alarm was raised, and whether it still is.
func (e *Etcd) handleNoSpace(ctx context.Context, cli *clientv3.Client) (raised, still bool) {
	alarms := noSpaceAlarms(ctx, cli)
	if len(alarms) == 0 {
		return false, false
	}
	e.noSpaceAt.Store(time.Now().UnixNano())
	klog.Errorf("etcd: NOSPACE alarm: the database reached its quota of %d bytes and the cluster refuses writes. "+
		"Compacting old revisions and defragmenting to recover; if the data itself is that large, raise the quota on every server "+
		"with --etcd-arg quota-backend-bytes=<bytes> and restart them one at a time", e.quota)
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if rev, err := cli.Get(octx, "/", clientv3.WithCountOnly()); err == nil {
		if _, err := cli.Compact(octx, rev.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			klog.Warningf("etcd: compacting to revision %d: %v", rev.Header.Revision, err)
		}
	}
	ep := e.Endpoint().URLs[0]
	if _, err := cli.Defragment(octx, ep); err != nil {
		klog.Warningf("etcd: defragmenting: %v", err)
		return true, true
	}
	st, err := cli.Status(octx, ep)
	if err != nil {
		return true, true
	}
	if st.DbSize >= e.quota*9/10 {
		klog.Errorf("etcd: still %d bytes after compaction and defragmentation, over 90%% of the quota (%d): delete data, or raise the quota "+
			"with --etcd-arg quota-backend-bytes=<bytes> on every server", st.DbSize, e.quota)
		return true, true
	}
	// An alarm is disarmed member by member, as raised.
	for _, a := range alarms {
		if _, err := cli.AlarmDisarm(octx, (*clientv3.AlarmMember)(a)); err != nil {
			klog.Warningf("etcd: disarming the NOSPACE alarm of member %x: %v", a.MemberID, err)
			return true, true
		}
	}
	klog.Infof("etcd: recovered from NOSPACE: the database is %d bytes of a %d-byte quota; writes are accepted again", st.DbSize, e.quota)
	return true, false
}

// defragIfFragmented defragments this member when much of its database is
// free space, holding a cluster-wide lock so that no two members do it at
// once (each is unavailable while it runs).
func (e *Etcd) defragIfFragmented(ctx context.Context, cli *clientv3.Client) {
	ep := e.Endpoint().URLs[0]
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := cli.Status(sctx, ep)
	cancel()
	if err != nil || !shouldDefrag(st.DbSize, st.DbSizeInUse) {
		return
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60), concurrency.WithContext(ctx))
	if err != nil {
		return
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, defragLockKey)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = mu.TryLock(lctx)
	cancel()
	if err != nil {
		return // another member is defragmenting; try at the next check
	}
	defer func() { _ = mu.Unlock(context.Background()) }()
	began := time.Now()
	klog.Infof("etcd: defragmenting: %d of %d bytes are free space", st.DbSize-st.DbSizeInUse, st.DbSize)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := cli.Defragment(dctx, ep); err != nil {
		klog.Warningf("etcd: defragmenting: %v", err)
		return
	}
	if after, err := cli.Status(dctx, ep); err == nil {
		klog.Infof("etcd: defragmented in %s: %d bytes now, was %d", time.Since(began).Round(time.Millisecond), after.DbSize, st.DbSize)
	}
}
