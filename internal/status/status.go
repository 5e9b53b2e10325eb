// Package status sums up an embedded datastore cluster for 'hakube cluster
// status': each member's role, health, lag and database, and how many more
// servers the cluster can lose.
package status

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Member is one member as the status shows it.
type Member struct {
	Name string `json:"name"`
	// Role is leader, voter or learner.
	Role      string `json:"role"`
	Healthy   bool   `json:"healthy"`
	RaftIndex uint64 `json:"raftIndex"`
	// Lag is how many log entries the member is behind the leader.
	Lag    uint64 `json:"lag"`
	DBSize int64  `json:"dbSize"`
	// DBFree is the space a defragmentation would give back.
	DBFree        int64   `json:"dbFree"`
	Fragmentation float64 `json:"fragmentation"`
	Error         string  `json:"error,omitempty"`
}

// Status is the whole cluster.
type Status struct {
	Datastore     string   `json:"datastore"`
	Members       []Member `json:"members"`
	Voters        int      `json:"voters"`
	HealthyVoters int      `json:"healthyVoters"`
	Quorum        int      `json:"quorum"`
	// CanLose is how many more voters may fail with the quorum kept;
	// negative when the quorum is already lost.
	CanLose int    `json:"canLose"`
	Healthy bool   `json:"healthy"`
	Summary string `json:"summary"`
	// LastSnapshot is the newest snapshot in this server's snapshot directory.
	LastSnapshot *Snapshot `json:"lastSnapshot,omitempty"`
}

// Snapshot names a snapshot and when and where it was taken.
type Snapshot struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Node    string    `json:"node"`
}

// New computes the status of members (Role voter or learner; the leader
// flagged by leader) of a datastore of kind.
func New(kind string, members []Member, leader string) Status {
	s := Status{Datastore: kind, Members: members}
	var leaderIndex uint64
	for _, m := range members {
		if m.Name == leader {
			leaderIndex = m.RaftIndex
		}
	}
	var down []string
	for i := range s.Members {
		m := &s.Members[i]
		if m.Name == leader {
			m.Role = "leader"
		}
		if m.Healthy && leaderIndex > m.RaftIndex {
			m.Lag = leaderIndex - m.RaftIndex
		}
		if m.DBSize > 0 {
			m.Fragmentation = float64(m.DBFree) / float64(m.DBSize)
		}
		if m.Role != "learner" {
			s.Voters++
			if m.Healthy {
				s.HealthyVoters++
			}
		}
		if !m.Healthy {
			down = append(down, m.Name)
		}
	}
	sort.Slice(s.Members, func(i, j int) bool { return s.Members[i].Name < s.Members[j].Name })
	s.Quorum = s.Voters/2 + 1
	s.CanLose = s.HealthyVoters - s.Quorum
	s.Healthy = len(down) == 0 && leader != "" && s.CanLose >= 0
	switch {
	case s.CanLose < 0 || leader == "":
		s.Summary = fmt.Sprintf("no quorum: %d of %d voters healthy, %d needed", s.HealthyVoters, s.Voters, s.Quorum)
	case len(down) > 0:
		s.Summary = fmt.Sprintf("degraded: %s not healthy; %d of %d voters healthy, %s", strings.Join(down, ", "), s.HealthyVoters, s.Voters, canLose(s.CanLose))
	default:
		s.Summary = fmt.Sprintf("healthy: %d voters, %s", s.Voters, canLose(s.CanLose))
	}
	return s
}

func canLose(n int) string {
	switch n {
	case 0:
		return "can lose no server"
	case 1:
		return "can lose 1 server"
	}
	return fmt.Sprintf("can lose %d servers", n)
}
