package bench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// day is the run's date, which starts the names of its files.
func day(rep *Report) string { return rep.Date[:len("2006-01-02")] }

func base(p plan, rep *Report) string { return filepath.Join(p.out, day(rep)+"-"+rep.Host) }

// saveProfile stores a CPU profile and the top of 'go tool pprof' on it.
func saveProfile(t *testing.T, p plan, rep *Report, target, workload string, data []byte) Profile {
	if err := os.MkdirAll(p.out, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(p.out, day(rep)+"-"+slug(target)+"-"+slug(workload)+".pprof")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var top strings.Builder
	for _, mode := range [][]string{{"-top", "-nodecount=20"}, {"-top", "-cum", "-nodecount=35"}} {
		out, err := exec.Command("go", append(append([]string{"tool", "pprof"}, mode...), file)...).CombinedOutput()
		if err != nil {
			t.Errorf("go tool pprof %s: %v\n%s", file, err, out)
		}
		top.Write(out)
		top.WriteString("\n")
	}
	return Profile{Target: target, Workload: workload, File: filepath.Base(file), Top: top.String()}
}

// write stores the report as JSON, Markdown and PNG plots.
func write(t *testing.T, p plan, rep *Report) {
	if err := os.MkdirAll(p.out, 0o755); err != nil {
		t.Fatal(err)
	}
	b := base(p, rep)
	js, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(b+".json", js, 0o644); err != nil {
		t.Fatal(err)
	}
	plots := writePlots(t, b, rep)
	md := markdown(p, rep, plots)
	if err := os.WriteFile(b+".md", []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s.md\n%s", b, md)
}

func find(rep *Report, target, level, workload string, clients int) (Result, bool) {
	for _, r := range rep.Results {
		if r.Target == target && r.Level == level && r.Workload == workload && r.Clients == clients {
			return r, true
		}
	}
	return Result{}, false
}

func findOp(rep *Report, target, op string) (Op, bool) {
	for _, o := range rep.Ops {
		if o.Target == target && o.Operation == op {
			return o, true
		}
	}
	return Op{}, false
}

func findFootprint(rep *Report, target, phase string) (Footprint, bool) {
	for _, f := range rep.Footprint {
		if f.Target == target && f.Phase == phase {
			return f, true
		}
	}
	return Footprint{}, false
}

// vs formats hakube's and the peer's figure and their ratio.
func vs(h, p float64, unit string) string {
	if p == 0 {
		return fmt.Sprintf("%s vs %s", num(h)+unit, num(p)+unit)
	}
	return fmt.Sprintf("%s vs %s (**%.2f×**)", num(h)+unit, num(p)+unit, h/p)
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func markdown(p plan, rep *Report, plots []string) string {
	var md strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&md, format, a...) }
	kindOf := "full run"
	if rep.Quick {
		kindOf = "**quick run** (--quick: rows of " + p.dur.String() + ", one repetition; rough figures)"
	}
	w("# Benchmarks, %s on %s (commit %s), %s\n\n", rep.Date, rep.Host, rep.Commit, kindOf)
	w("%d CPUs. Every system ran on this machine in this run, one after the other; multi-member systems on "+
		"network-namespace hosts over a bridge. %s per throughput row, %d repetition(s) per operation. The run took %.1f min.\n\n",
		rep.CPUs, p.dur, p.reps, rep.Seconds/60)
	w("Disk floor: a 4 KiB write + fdatasync takes **%.2f ms** (p50), %.2f ms (p99).\n\n", rep.Fsync.P50ms, rep.Fsync.P99ms)

	w("## Goals\n\nThe performance goals of issue 16, judged on this run (— : not in this run). The scale goal has its own run, "+
		"`make bench-scale`.\n\n%s\n", goalsTable(rep))

	w("## hakube / peer\n\nEach cell: hakube's figure vs the peer's (ratio hakube/peer). Throughput: higher is better; " +
		"latency, durations, memory and CPU: lower is better. Peers behind Kubernetes run a hakube server in front " +
		"(`--datastore-endpoint`), whose processes count in their footprint.\n\n")
	for _, pr := range pairs {
		h, pe := pr[0], pr[1]
		w("### %s / %s\n\n", h, pe)
		w("| level | workload | clients | ops/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n")
		for _, r := range rep.Results {
			if r.Target != h {
				continue
			}
			o, ok := find(rep, pe, r.Level, r.Workload, r.Clients)
			if !ok {
				continue
			}
			rate := vs(r.OpsPerSec, o.OpsPerSec, "")
			if r.Workload == "watch" {
				rate = "—"
			}
			w("| %s | %s | %d | %s | %s | %s |\n", r.Level, r.Workload, r.Clients, rate, vs(r.P50ms, o.P50ms, ""), vs(r.P99ms, o.P99ms, ""))
		}
		var ops, fps []string
		for _, o := range rep.Ops {
			if q, ok := findOp(rep, pe, o.Operation); ok && o.Target == h {
				ops = append(ops, fmt.Sprintf("| %s | %s | %s |\n", o.Operation, vs(o.Median, q.Median, " s"), vs(o.Max, q.Max, " s")))
			}
		}
		for _, f := range rep.Footprint {
			if q, ok := findFootprint(rep, pe, f.Phase); ok && f.Target == h {
				fps = append(fps, fmt.Sprintf("| %s | %s | %s | %s | %s |\n", f.Phase, vs(f.RSSMiB, q.RSSMiB, " MiB"), vs(f.SetMiB, q.SetMiB, " MiB"), vs(f.AnonMiB, q.AnonMiB, " MiB"), vs(f.CPUPct, q.CPUPct, " %")))
			}
		}
		if len(ops) > 0 {
			w("\n| operation | median | max |\n|---|---|---|\n%s", strings.Join(ops, ""))
		}
		if len(fps) > 0 {
			w("\n| footprint | RSS | set | anonymous | CPU (%% of a core) |\n|---|---|---|---|---|\n%s", strings.Join(fps, ""))
		}
		w("\n")
	}

	w("## Physical floor\n\nThe single-client put latency at the datastore as a multiple of the disk's fsync (p50).\n\n")
	w("| target | put ×1 p50 ms | × fsync |\n|---|---|---|\n")
	for _, tg := range targetNames(rep) {
		if r, ok := find(rep, tg, "datastore", "put", 1); ok && rep.Fsync.P50ms > 0 {
			w("| %s | %.2f | %.1f× |\n", tg, r.P50ms, r.P50ms/rep.Fsync.P50ms)
		}
	}

	w("\n## Datastore\n\nThrough the etcd API (clientv3): puts and reads to the leader's member; 256-byte values over %d keys; "+
		"watch: one put at a time to the leader, delivered to a watcher on a follower (the same member on one server). "+
		"Serializable reads only where the server allows them (kine's etcd API refuses them). kine is reached over "+
		"loopback TCP, hakube's SQLite and Dqlite over a unix socket, etcd over TLS.\n\n", keySpace)
	table(&md, rep, "datastore")
	w("\n## Kubernetes API\n\nConfigMaps with 1 KiB of data through the apiserver with client-go, no client-side rate limit "+
		"(update is a merge patch; list reads 100 of the %d+ objects). SLO: mutating calls p99 ≤ %d ms.\n\n", p.pool, sloP99ms)
	table(&md, rep, "kubernetes")

	w("\n## Operations\n\nCold start: a server with a fresh data dir (the first of a new cluster for 3-server kinds) until " +
		"'hakube is ready'; peers until a write is acknowledged. Failover: the leader SIGKILLed until a write started " +
		"after the kill is acknowledged through a follower (datastore) and through an apiserver that survived. Join: " +
		"the killed server's member removed, its data wiped, started again until it is a healthy voter.\n\n")
	w("| target | operation | n | median s | max s |\n|---|---|---|---|---|\n")
	for _, o := range rep.Ops {
		w("| %s | %s | %d | %.2f | %.2f |\n", o.Target, o.Operation, len(o.Samples), o.Median, o.Max)
	}

	w("\n## Footprint\n\nResident memory summed over the processes (mean over the window), the set's resident memory with " +
		"each physical page counted once (at the window's end: what the processes hold of a machine they run on alone), " +
		"the anonymous part of RSS (the processes' own memory; the rest is mapped files, mostly the hakube binary, shared " +
		"between its processes) and CPU (%% of one core); idle after settling, and during the put ×16 and create ×16 rows. " +
		"Memory goals are judged on the set's memory.\n\n")
	w("| target | processes | phase | RSS MiB | set MiB | anonymous MiB | CPU %% |\n|---|---|---|---|---|---|---|\n")
	for _, f := range rep.Footprint {
		w("| %s | %s | %s | %.0f | %.0f | %.0f | %.0f |\n", f.Target, f.Processes, f.Phase, f.RSSMiB, f.SetMiB, f.AnonMiB, f.CPUPct)
	}

	if len(plots) > 0 {
		w("\n## Plots\n\n")
		for _, pl := range plots {
			w("![%s](%s)\n\n", strings.TrimSuffix(pl, ".png"), pl)
		}
	}
	for _, pf := range rep.Profiles {
		w("\n## CPU profile: %s leader, %s\n\n`%s` (`go tool pprof -top`, flat then cumulative):\n\n```\n%s```\n", pf.Target, pf.Workload, pf.File, pf.Top)
	}
	return md.String()
}

func targetNames(rep *Report) []string {
	var names []string
	for _, r := range rep.Results {
		if !slices.Contains(names, r.Target) {
			names = append(names, r.Target)
		}
	}
	return names
}

func table(md *strings.Builder, rep *Report, level string) {
	fmt.Fprintln(md, "| target | workload | clients | ops/s | p50 ms | p99 ms | errors | SLO |")
	fmt.Fprintln(md, "|---|---|---|---|---|---|---|---|")
	for _, r := range rep.Results {
		if r.Level != level {
			continue
		}
		slo := ""
		if level == "kubernetes" && mutating(r.Workload) {
			slo = "met"
			if r.P99ms > sloP99ms {
				slo = "**missed**"
			}
		}
		rate := fmt.Sprintf("%.0f", r.OpsPerSec)
		if r.Workload == "watch" {
			rate = "—"
		}
		fmt.Fprintf(md, "| %s | %s | %d | %s | %.2f | %.2f | %d | %s |\n", r.Target, r.Workload, r.Clients, rate, r.P50ms, r.P99ms, r.Errors, slo)
	}
}

// writePlots draws latency CDFs and throughput against clients; it returns
// the files' base names.
func writePlots(t *testing.T, b string, rep *Report) []string {
	var files []string
	cdfs := []struct{ level, workload, title string }{
		{"datastore", "put", "Datastore put latency, 16 clients"},
		{"datastore", "watch", "Watch delivery latency (put on the leader → event on a follower)"},
		{"kubernetes", "k8s-create", "Kubernetes ConfigMap create latency, 16 workers"},
	}
	for _, c := range cdfs {
		pl := newPlot(c.title, "latency (ms, log scale)", "fraction of operations")
		pl.X.Scale, pl.X.Tick.Marker = plot.LogScale{}, ticks125{}
		i := 0
		for _, r := range rep.Results {
			if r.Level != c.level || r.Workload != c.workload || len(r.CDFms) == 0 || (c.workload != "watch" && r.Clients != 16) {
				continue
			}
			pts := make(plotter.XYs, len(r.CDFms))
			for q, v := range r.CDFms {
				pts[q].X, pts[q].Y = max(v, 0.01), float64(q)/100
			}
			line(t, pl, r.Target, pts, i)
			i++
		}
		if i > 0 { // a run of some targets only may have none; a log axis cannot be empty
			files = append(files, save(t, pl, b, slug(c.level+" "+c.workload)+"-cdf"))
		}
	}
	pl := newPlot("Datastore put throughput against clients", "clients (log scale)", "puts per second")
	pl.X.Scale, pl.X.Tick.Marker = plot.LogScale{}, plot.ConstantTicks([]plot.Tick{{Value: 1, Label: "1"}, {Value: 16, Label: "16"}, {Value: 64, Label: "64"}})
	if len(targetNames(rep)) == 0 {
		return files
	}
	for i, tg := range targetNames(rep) {
		var pts plotter.XYs
		for _, n := range []int{1, 16, 64} {
			if r, ok := find(rep, tg, "datastore", "put", n); ok {
				pts = append(pts, plotter.XY{X: float64(n), Y: r.OpsPerSec})
			}
		}
		line(t, pl, tg, pts, i)
	}
	return append(files, save(t, pl, b, "put-throughput"))
}

func line(t *testing.T, pl *plot.Plot, name string, pts plotter.XYs, i int) {
	l, err := plotter.NewLine(pts)
	if err != nil {
		t.Fatal(err)
	}
	l.Color = plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i)
	l.Width = vg.Points(1.5)
	pl.Add(l)
	pl.Legend.Add(name, l)
	pl.Legend.Top, pl.Legend.Left = false, false
	pl.Legend.XOffs, pl.Legend.YOffs = -vg.Points(5), vg.Points(30)
}

// ticks125 labels a log axis at 1, 2 and 5 times the powers of ten.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for d := math.Pow(10, math.Floor(math.Log10(lo))); d <= hi; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := m * d; v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ts
}

func newPlot(title, x, y string) *plot.Plot {
	pl := plot.New()
	pl.Title.Text, pl.X.Label.Text, pl.Y.Label.Text = title, x, y
	pl.BackgroundColor = color.White
	pl.Add(plotter.NewGrid())
	return pl
}

func save(t *testing.T, pl *plot.Plot, b, name string) string {
	file := b + "-" + name + ".png"
	if err := pl.Save(9*vg.Inch, 5*vg.Inch, file); err != nil {
		t.Fatal(err)
	}
	return filepath.Base(file)
}
