package dqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
)

// Member is one member of the cluster as the CLI shows it.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
	// Healthy: the member answered, and has applied the log recently.
	Healthy bool   `json:"healthy"`
	Applied uint64 `json:"appliedIndex,omitempty"`
	// DBSize is the SQLite state's size; DBFree its free pages' bytes.
	DBSize int64 `json:"dbSize,omitempty"`
	DBFree int64 `json:"dbFree,omitempty"`
}

// convertMembers turns members into the datastore's common terms.
func convertMembers(ms []Member) []datastore.Member {
	out := make([]datastore.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, datastore.Member{Name: m.ID, PeerURLs: []string{"https://" + m.Address}, Learner: !m.Voter,
			Leader: m.Leader, Healthy: m.Healthy, RaftIndex: m.Applied, DBSize: m.DBSize, DBSizeUsed: m.DBSize - m.DBFree})
	}
	return out
}

type status struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	// LeaderAddress lets a member with no configuration yet find the leader.
	LeaderAddress string `json:"leaderAddress,omitempty"`
	Applied       uint64 `json:"appliedIndex"`
	Commit        uint64 `json:"commitIndex"`
	DBSize        int64  `json:"dbSize"`
	DBFree        int64  `json:"dbFree"`
	// Put: the member applies opPut (older members leave it out).
	Put bool `json:"put,omitempty"`
}

func (n *Node) status() status {
	st := status{ID: n.cfg.ID, State: n.raft.State().String(), Commit: n.raft.CommitIndex(), Put: true}
	_ = n.fsm.read(func(s *store) error {
		st.Applied = s.index
		st.DBSize, st.DBFree, _ = s.size(context.Background())
		return nil
	})
	addr, leader := n.raft.LeaderWithID()
	st.Leader, st.LeaderAddress = string(leader), string(addr)
	return st
}

// Members lists the configuration with each member's health, as seen by
// asking every member for its status. The configuration is the one committed
// when a leader answers, so a member just promoted is not shown a learner.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	n.catchUp(ctx)
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, s := range f.Configuration().Servers {
		m := Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader}
		st, _ := n.statusOf(ctx, s)
		m.Applied, m.DBSize, m.DBFree = st.Applied, st.DBSize, st.DBFree
		m.Healthy = st.ID == m.ID && st.Leader != ""
		out = append(out, m)
	}
	return out, nil
}

// statusOf is what member s says of itself, asked for at most 2 s (this
// member answers without a call); the zero status when it cannot be asked.
func (n *Node) statusOf(ctx context.Context, s raft.Server) (status, error) {
	if s.ID == raft.ServerID(n.cfg.ID) {
		return n.status(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var st status
	if err := n.call(ctx, string(s.Address), "GET", "/status", nil, &st); err != nil {
		return status{}, err
	}
	return st, nil
}

// putLoop keeps putOK: whether every member of the configuration says it
// applies opPut. A member of an older version (a rolling upgrade) would stop
// at the first opPut entry, as an unknown command; until all say so, or while
// one cannot be asked, puts use the older commands.
func (n *Node) putLoop() {
	defer n.wg.Done()
	for {
		servers, _, ok := n.configuration()
		all := ok && len(servers) > 0
		for _, s := range servers {
			if !all || s.ID == raft.ServerID(n.cfg.ID) {
				continue
			}
			st, err := n.statusOf(context.Background(), s)
			all = err == nil && st.ID == string(s.ID) && st.Put
		}
		n.putOK.Store(all)
		select {
		case <-n.stop:
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// addNonvoter adds a joining member. A member of the same ID is one whose
// data was wiped: it is removed first, as a voter with an empty log would
// count towards commits it no longer holds.
func (n *Node) addNonvoter(m Member) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(m.ID) {
			klog.Infof("dqlite: %s joins again with no state: removing its old membership first", m.ID)
			if err := n.raft.RemoveServer(s.ID, 0, 30*time.Second).Error(); err != nil {
				return err
			}
		}
	}
	return n.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.Address), 0, 30*time.Second).Error()
}

// RemoveMember removes a member through the leader, waiting out an election
// (a leader that just stopped) as a write does.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	body, _ := json.Marshal(Member{ID: id})
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	return untilLeader(ctx, func(ctx context.Context) error { return n.call(ctx, n.cfg.Advertise, "POST", "/remove", body, nil) })
}

// untilLeader retries fn while no leader answers (an election is under way),
// until ctx ends.
func untilLeader(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if !errors.Is(err, errNoLeaderYet) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeMember removes a member unless the healthy voters left would be
// fewer than a quorum of the new configuration.
func (n *Node) removeMember(ctx context.Context, id string) error {
	ms, err := n.Members(ctx)
	if err != nil {
		return err
	}
	// The change must commit in the current configuration, and the new one
	// must still have a quorum.
	found, voters, healthy, votersAfter, healthyAfter := false, 0, 0, 0, 0
	var addr string
	for _, m := range ms {
		if m.ID == id {
			found, addr = true, m.Address
		}
		if !m.Voter {
			continue
		}
		voters++
		if m.Healthy {
			healthy++
		}
		if m.ID != id {
			votersAfter++
			if m.Healthy {
				healthyAfter++
			}
		}
	}
	if !found {
		return fmt.Errorf("no member called %s", id)
	}
	if healthy < voters/2+1 || healthyAfter < votersAfter/2+1 {
		return fmt.Errorf("removing %s needs a quorum of healthy voters before and after (%d of %d healthy now, %d of %d after); bring members back first",
			id, healthy, voters, healthyAfter, votersAfter)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
		return err
	}
	if id == n.cfg.ID {
		// A leader that removed itself knows it for certain: the change
		// committed. It has no leader left to ask.
		klog.Infof("dqlite: this member, the leader, removed itself")
		n.removedOnce.Do(func() { close(n.removed) })
		return nil
	}
	// The leader stops replicating to a member as soon as it appends the
	// change, so the member may never see the configuration without it; and
	// a leader that stops right after (a move of the cluster's data) leaves it
	// none to ask. Tell it now, while this leader still answers its check.
	// Best effort: a member that is down finds out when it starts.
	nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.call(nctx, addr, "POST", "/removed", nil, nil); err != nil {
		klog.V(2).Infof("dqlite: telling %s it was removed: %v", id, err)
	}
	return nil
}

// join asks the cluster to add this member as a non-voter, then promotes it
// in the background once it has caught up.
func (n *Node) join(ctx context.Context) error {
	body, _ := json.Marshal(Member{ID: n.cfg.ID, Address: n.cfg.Advertise})
	for {
		cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		err := n.call(cctx, n.cfg.Join, "POST", "/join", body, nil)
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, errNoLeaderYet) {
			return fmt.Errorf("dqlite: joining through %s: %w", n.cfg.Join, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dqlite: joining through %s: %w", n.cfg.Join, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	return nil
}

// promote asks the leader to make this member a voter once its state has
// caught up with the leader's commit index; it also finishes a promotion a
// restart interrupted.
func (n *Node) promote() {
	defer n.wg.Done()
	body, _ := json.Marshal(Member{ID: n.cfg.ID, Address: n.cfg.Advertise})
	for !n.Voter() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := n.linearize(ctx)
		if err == nil {
			var addr string
			if addr, err = n.leaderAddr(); err == nil {
				err = n.call(ctx, addr, "POST", "/promote", body, nil)
			}
		}
		cancel()
		if err == nil {
			klog.Infof("dqlite: %s caught up and is a voter", n.cfg.ID)
			continue
		}
		klog.V(2).Infof("dqlite: promotion of %s: %v", n.cfg.ID, err)
		select {
		case <-n.stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Voter reports whether this member votes.
func (n *Node) Voter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.cfg.ID) {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}
