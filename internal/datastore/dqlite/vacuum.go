package dqlite

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"k8s.io/klog/v2"
)

// Vacuum thresholds: a member's SQLite state is rewritten (VACUUM) when at
// least half of it, and 64 MiB, is free pages.
const (
	vacuumMinFree    = 64 << 20
	vacuumMinFreePct = 50
)

func shouldVacuum(total, free int64, minFree int64) bool {
	return free >= minFree && free*100 >= total*vacuumMinFreePct
}

// vacuumLoop runs on every member; only the leader acts. It asks fragmented
// followers, one at a time, to vacuum their state. A follower busy vacuuming
// applies the log late but still acknowledges entries, and with one follower
// at a time the others keep the quorum, so writes go on; the leader never
// vacuums itself (its state is rewritten when it restarts or loses the lead).
func (n *Node) vacuumLoop() {
	defer n.wg.Done()
	if n.cfg.VacuumInterval <= 0 {
		return
	}
	t := time.NewTicker(n.cfg.VacuumInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.raft.State() == raft.Leader {
			n.vacuumFollowers(context.Background(), vacuumMinFree)
		}
	}
}

// vacuumFollowers asks each fragmented follower in turn to vacuum, and
// returns how many did.
func (n *Node) vacuumFollowers(ctx context.Context, minFree int64) int {
	ms, err := n.Members(ctx)
	if err != nil {
		return 0
	}
	done := 0
	for _, m := range ms {
		if m.ID == n.cfg.ID || !m.Healthy || !shouldVacuum(m.DBSize, m.DBFree, minFree) {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err := n.call(vctx, m.Address, "POST", "/vacuum", nil, nil)
		cancel()
		if err != nil {
			klog.Warningf("dqlite: vacuum of %s: %v", m.ID, err)
			continue
		}
		done++
	}
	return done
}

// handleVacuum rewrites this member's state while applies wait.
func (n *Node) handleVacuum(w http.ResponseWriter, _ *http.Request) {
	began := time.Now()
	var before, after int64
	err := n.fsm.write(func(st *store) error {
		before, _, _ = st.size(context.Background())
		if _, err := st.db.Exec(`VACUUM`); err != nil {
			return err
		}
		after, _, _ = st.size(context.Background())
		return nil
	})
	if err != nil {
		rpcError(w, err)
		return
	}
	klog.Infof("dqlite: vacuumed the state in %s: %d bytes, was %d", time.Since(began).Round(time.Millisecond), after, before)
	w.WriteHeader(http.StatusNoContent)
}
