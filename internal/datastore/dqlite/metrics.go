package dqlite

import (
	"context"
	"strconv"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the member's Prometheus metrics, read at each scrape.
func (d *Datastore) Collector() prometheus.Collector { return collector{d} }

type collector struct{ d *Datastore }

var (
	descLeader  = prometheus.NewDesc("hakube_dqlite_is_leader", "1 if this member is the Raft leader.", nil, nil)
	descHasLead = prometheus.NewDesc("hakube_dqlite_has_leader", "1 if this member knows a leader.", nil, nil)
	descTerm    = prometheus.NewDesc("hakube_dqlite_raft_term", "The member's current Raft term.", nil, nil)
	descIndex   = prometheus.NewDesc("hakube_dqlite_raft_index", "The member's Raft log indexes.", []string{"kind"}, nil)
	descVoters  = prometheus.NewDesc("hakube_dqlite_members", "Members in the configuration, by suffrage.", []string{"suffrage"}, nil)
	descDBSize  = prometheus.NewDesc("hakube_dqlite_db_size_bytes", "Size of the member's SQLite state.", nil, nil)
	descDBFree  = prometheus.NewDesc("hakube_dqlite_db_free_bytes", "Free pages of the member's SQLite state, in bytes.", nil, nil)
	descRev     = prometheus.NewDesc("hakube_dqlite_revision", "The key/value store's current revision.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descHasLead, descTerm, descIndex, descVoters, descDBSize, descDBFree, descRev} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.d.node
	if n == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	stats := n.raft.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseUint(stats[k], 10, 64)
		return float64(v)
	}
	gauge(descLeader, b2f(n.raft.State() == raft.Leader))
	_, leader := n.raft.LeaderWithID()
	gauge(descHasLead, b2f(leader != ""))
	gauge(descTerm, num("term"))
	for _, k := range []string{"commit_index", "applied_index", "last_log_index", "last_snapshot_index"} {
		gauge(descIndex, num(k), k)
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		voters, others := 0, 0
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			} else {
				others++
			}
		}
		gauge(descVoters, float64(voters), "voter")
		gauge(descVoters, float64(others), "nonvoter")
	}
	_ = n.fsm.read(func(st *store) error {
		total, free, err := st.size(context.Background())
		if err == nil {
			gauge(descDBSize, float64(total))
			gauge(descDBFree, float64(free))
		}
		gauge(descRev, float64(st.rev))
		return nil
	})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
