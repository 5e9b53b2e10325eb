package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// goal is one row of the performance goals (issue 16): the figures of this
// run it is judged on, and whether each meets its bound.
type goal struct {
	figure string
	bound  string
	// values computes the run's figures, formatted, and whether each meets
	// the bound; a figure the run lacks (a quick run, a target left out) is
	// not judged.
	values func(rep *Report) []judged
}

type judged struct {
	text string
	met  bool
	ok   bool // the run has the figure
}

func atLeast(v, bound float64, format string) judged {
	return judged{fmt.Sprintf(format, v), v >= bound, true}
}

func atMost(v, bound float64, format string) judged {
	return judged{fmt.Sprintf(format, v), v <= bound, true}
}

// ratio of a's to b's throughput in one workload, or false when either is missing.
func ratio(rep *Report, a, b, level, workload string, clients int) (float64, bool) {
	x, ok1 := find(rep, a, level, workload, clients)
	y, ok2 := find(rep, b, level, workload, clients)
	if !ok1 || !ok2 || y.OpsPerSec == 0 {
		return 0, false
	}
	return x.OpsPerSec / y.OpsPerSec, true
}

func ratioAtLeast(rep *Report, a, b, level, workload string, clients int) judged {
	if r, ok := ratio(rep, a, b, level, workload, clients); ok {
		return atLeast(r, 1, "%.2f×")
	}
	return judged{}
}

func opJudged(rep *Report, target, op string, of func(Op) float64, bound float64) judged {
	if o, ok := findOp(rep, target, op); ok && len(o.Samples) > 0 {
		return atMost(of(o), bound, "%.2f s")
	}
	return judged{}
}

func opMedian(o Op) float64 { return o.Median }

// opP99 is the samples' 99th percentile, nearest rank: the largest of fewer
// than 100.
func opP99(o Op) float64 {
	s := slices.Sorted(slices.Values(o.Samples))
	return s[int(math.Ceil(float64(len(s))*0.99))-1]
}

// idleMemory is judged on the set's memory: summed RSS would count the
// hakube binary's pages once for each hakube process that maps them (a
// node's containerd is one). A run from before the set was measured shows
// RSS, which is the same for one process.
func idleMemory(rep *Report, target string, bound float64) judged {
	f, ok := findFootprint(rep, target, "idle")
	switch {
	case ok && f.SetMiB > 0:
		return atMost(f.SetMiB, bound, "%.0f MiB")
	case ok:
		return atMost(f.RSSMiB, bound, "%.0f MiB")
	}
	return judged{}
}

func putOverFsync(rep *Report, target string) judged {
	if r, ok := find(rep, target, "datastore", "put", 1); ok && rep.Fsync.P50ms > 0 {
		return atMost(r.P50ms/rep.Fsync.P50ms, 6, "%.1f×")
	}
	return judged{}
}

var goals = []goal{
	{"Dqlite put ×16 / ×64, ops/s vs hakube etcd", "≥ 1.0×", func(rep *Report) []judged {
		return []judged{ratioAtLeast(rep, hakubeDqlite, hakubeEtcd, "datastore", "put", 16), ratioAtLeast(rep, hakubeDqlite, hakubeEtcd, "datastore", "put", 64)}
	}},
	{"k8s create ×16 vs Debian's etcd behind the same apiserver: hakube etcd / Dqlite", "≥ 1.0×", func(rep *Report) []judged {
		return []judged{ratioAtLeast(rep, hakubeEtcd, peerEtcd, "kubernetes", "k8s-create", 16), ratioAtLeast(rep, hakubeDqlite, peerEtcd, "kubernetes", "k8s-create", 16)}
	}},
	{"Dqlite watch delivery on a follower, p50", "≤ 2 ms", func(rep *Report) []judged {
		if r, ok := find(rep, hakubeDqlite, "datastore", "watch", 1); ok {
			return []judged{atMost(r.P50ms, 2, "%.1f ms")}
		}
		return []judged{{}}
	}},
	{"single put p50 / fsync p50: etcd / Dqlite", "≤ 6×", func(rep *Report) []judged {
		return []judged{putOverFsync(rep, hakubeEtcd), putOverFsync(rep, hakubeDqlite)}
	}},
	{"etcd join to voter, median", "≤ 3 s", func(rep *Report) []judged {
		return []judged{opJudged(rep, hakubeEtcd, "join to voter", opMedian, 3)}
	}},
	{"leader SIGKILL → next acknowledged write, p99: etcd / Dqlite", "≤ 2 s", func(rep *Report) []judged {
		const op = "failover: first write acknowledged (datastore)"
		return []judged{opJudged(rep, hakubeEtcd, op, opP99, 2), opJudged(rep, hakubeDqlite, op, opP99, 2)}
	}},
	{"leader SIGTERM → longest write stall, p99: etcd / Dqlite", "≤ 0.3 s", func(rep *Report) []judged {
		const op = "graceful leader stop: longest write stall (datastore)"
		return []judged{opJudged(rep, hakubeEtcd, op, opP99, 0.3), opJudged(rep, hakubeDqlite, op, opP99, 0.3)}
	}},
	{"server idle memory, control plane only (1 server, SQLite)", "≤ 300 MiB", func(rep *Report) []judged {
		return []judged{idleMemory(rep, hakubeSQLite, 300)}
	}},
	{"server with its node, idle memory (" + nodeProcs + ")", "≤ 400 MiB", func(rep *Report) []judged {
		return []judged{idleMemory(rep, hakubeNode, 400)}
	}},
	{"agent idle memory (" + nodeProcs + ")", "≤ 150 MiB", func(rep *Report) []judged {
		return []judged{idleMemory(rep, hakubeAgent, 150)}
	}},
	{"cold start to ready API, median: etcd / Dqlite / SQLite", "≤ 4 s", func(rep *Report) []judged {
		const op = "cold start to API ready"
		return []judged{opJudged(rep, hakubeEtcd, op, opMedian, 4), opJudged(rep, hakubeDqlite, op, opMedian, 4), opJudged(rep, hakubeSQLite, op, opMedian, 4)}
	}},
	{"pod startup latency p99: 30 pods at once on 2 nodes", "≤ 2 s", func(rep *Report) []judged {
		return []judged{opJudged(rep, hakubeNode, podStartupOp(30), opP99, 2)}
	}},
	{"Dqlite compaction of 100k revisions: longest write stall", "≤ 0.1 s", func(rep *Report) []judged {
		return []judged{opJudged(rep, hakubeDqlite, "compaction of 100k revisions: longest write stall", opMedian, 0.1)}
	}},
}

// goalsTable is the goals with this run's figures; the scale goal has its
// own run, 'make bench-scale'.
func goalsTable(rep *Report) string {
	var b strings.Builder
	b.WriteString("| figure | this run | goal | met |\n|---|---|---|---|\n")
	for _, g := range goals {
		var texts []string
		met, judgedAny := true, false
		for _, j := range g.values(rep) {
			if !j.ok {
				texts = append(texts, "—")
				continue
			}
			texts = append(texts, j.text)
			met, judgedAny = met && j.met, true
		}
		verdict := "—"
		switch {
		case judgedAny && met:
			verdict = "yes"
		case judgedAny:
			verdict = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.figure, strings.Join(texts, " / "), g.bound, verdict)
	}
	return b.String()
}
