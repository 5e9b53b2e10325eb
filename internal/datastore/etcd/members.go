package etcd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/datastore"
)

// Membership is the membership of the cluster an etcd client reaches.
type Membership struct{ Client *clientv3.Client }

// Members implements datastore.Membership.
func (m Membership) Members(ctx context.Context) ([]datastore.Member, error) {
	return Members(ctx, m.Client)
}

// RemoveMember implements datastore.Membership.
func (m Membership) RemoveMember(ctx context.Context, name string) (datastore.Member, error) {
	return RemoveMember(ctx, m.Client, name)
}

// Members implements datastore.Membership through the member's own endpoint.
func (e *Etcd) Members(ctx context.Context) ([]datastore.Member, error) {
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return Members(ctx, cli)
}

// RemoveMember implements datastore.Membership through the member's own endpoint.
func (e *Etcd) RemoveMember(ctx context.Context, name string) (datastore.Member, error) {
	cli, err := datastore.Client(e.Endpoint())
	if err != nil {
		return datastore.Member{}, err
	}
	defer cli.Close()
	return Membership{cli}.RemoveMember(ctx, name)
}

// Members lists the cluster's members, asking each for its status.
func Members(ctx context.Context, cli *clientv3.Client) ([]datastore.Member, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(lctx)
	if err != nil {
		return nil, fmt.Errorf("listing etcd members: %w", err)
	}
	var leader uint64
	out := make([]datastore.Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		mem := datastore.Member{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner}
		if len(m.ClientURLs) == 0 {
			mem.Error = "not started"
		} else {
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := cli.Status(sctx, m.ClientURLs[0])
			scancel()
			if err != nil {
				mem.Error = err.Error()
			} else {
				mem.Healthy = len(st.Errors) == 0
				mem.RaftIndex, mem.DBSize, mem.DBSizeUsed = st.RaftIndex, st.DbSize, st.DbSizeInUse
				if st.Leader != 0 {
					leader = st.Leader
				}
			}
		}
		out = append(out, mem)
	}
	for i, m := range resp.Members {
		out[i].Leader = m.ID == leader
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ErrWouldLoseQuorum refuses a removal that leaves fewer healthy voters than a quorum.
var ErrWouldLoseQuorum = errors.New("would lose quorum")

// RemoveMember removes the member called name, refusing when the healthy voters
// left would not form a quorum of the remaining cluster.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string) (datastore.Member, error) {
	members, err := Members(ctx, cli)
	if err != nil {
		return datastore.Member{}, err
	}
	var target *datastore.Member
	voters, healthyOthers := 0, 0
	for i, m := range members {
		if m.Name == name || m.ID == name {
			target = &members[i]
			continue
		}
		if !m.Learner {
			voters++
			if m.Healthy {
				healthyOthers++
			}
		}
	}
	if target == nil {
		var names []string
		for _, m := range members {
			names = append(names, m.Name)
		}
		return datastore.Member{}, fmt.Errorf("no member named %q; members are %v", name, names)
	}
	if !target.Learner {
		if voters == 0 {
			return datastore.Member{}, fmt.Errorf("refusing to remove %s: it is the only voting member (%w)", name, ErrWouldLoseQuorum)
		}
		if quorum := voters/2 + 1; healthyOthers < quorum {
			return datastore.Member{}, fmt.Errorf("refusing to remove %s: the %d remaining voters need %d healthy for a quorum but only %d are healthy (%w); bring the others back first",
				name, voters, quorum, healthyOthers, ErrWouldLoseQuorum)
		}
	}
	var id uint64
	if _, err := fmt.Sscanf(target.ID, "%x", &id); err != nil {
		return datastore.Member{}, err
	}
	// etcd refuses a removal ("unhealthy cluster") until the members that
	// remain have been connected for 5 s: right after a server restarted,
	// as a script may well do. That passes; a real lack of quorum was refused
	// above.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		_, err := cli.MemberRemove(rctx, id)
		if err == nil {
			return *target, nil
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") {
			return datastore.Member{}, fmt.Errorf("removing %s: %w", name, err)
		}
		select {
		case <-rctx.Done():
			return datastore.Member{}, fmt.Errorf("removing %s: %w", name, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
