package bench

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, in which /proc/<pid>/stat counts CPU
// time; it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// mem is the memory of some processes, in MiB: summed resident (RSS) and
// its anonymous part, and the resident pages of the set, each counted once
// (set). The rest of RSS is mapped files, nearly all of it the hakube
// binary's pages: shared by every hakube process on the machine (the three
// servers of a 3-server target; a node's server or agent and its
// containerd) and reclaimable. Summed RSS counts a shared page once per
// process. PSS would split it between all the machine's processes that map
// it, also those of another target host on this machine; set is what these
// processes hold of the machine's memory, as if they ran alone on it.
type mem struct{ rss, anon, set float64 }

// sample is the mean memory over a window (set: at its end) and the CPU
// (percent of one core) of some processes.
type sample struct {
	mem
	cpu float64
}

// footprint is a Footprint row from a sample.
func footprint(target, procs, phase string, s sample) Footprint {
	return Footprint{Target: target, Processes: procs, Phase: phase, RSSMiB: s.rss, SetMiB: s.set, AnonMiB: s.anon, CPUPct: s.cpu}
}

// sampleWhile measures pids while fn runs, reading /proc every 250 ms.
func sampleWhile(pids []int, fn func()) sample {
	cpu0, began := cpuTicks(pids), time.Now()
	stop := make(chan struct{})
	done := make(chan sample)
	go func() {
		var rss, anon float64
		n := 0
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			r, a := memMiB(pids)
			rss, anon = rss+r, anon+a
			n++
			select {
			case <-stop:
				done <- sample{mem: mem{rss: rss / float64(n), anon: anon / float64(n), set: setMiB(pids)}}
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(stop)
	s := <-done
	s.cpu = float64(cpuTicks(pids)-cpu0) / clockTicks / time.Since(began).Seconds() * 100
	return s
}

// memMiB is the summed VmRSS and RssAnon of pids, from one read of each
// /proc/<pid>/status; a process that is gone counts 0.
func memMiB(pids []int) (rss, anon float64) {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			n, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmRSS:":
				rss += n / 1024
			case "RssAnon:":
				anon += n / 1024
			}
		}
	}
	return rss, anon
}

// setMiB is the resident memory of pids with every physical page counted
// once: the page frames of their mappings, from /proc/<pid>/pagemap (frame
// numbers need root, which the benchmarks have). A process that is gone
// counts 0.
func setMiB(pids []int) float64 {
	const pageSize = 4096
	frames := map[uint64]struct{}{}
	for _, pid := range pids {
		maps, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
		if err != nil {
			continue
		}
		pm, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(maps), "\n") {
			f := strings.Fields(line)
			// Reservations without access (Go reserves its heap's address
			// space so) hold no pages.
			if len(f) < 2 || strings.HasPrefix(f[1], "---") {
				continue
			}
			from, to, ok := strings.Cut(f[0], "-")
			lo, err1 := strconv.ParseUint(from, 16, 64)
			hi, err2 := strconv.ParseUint(to, 16, 64)
			if !ok || err1 != nil || err2 != nil || hi <= lo {
				continue
			}
			buf := make([]byte, (hi-lo)/pageSize*8)
			n, _ := pm.ReadAt(buf, int64(lo/pageSize*8))
			for i := 0; i+8 <= n; i += 8 {
				e := binary.LittleEndian.Uint64(buf[i:])
				if e&(1<<63) != 0 { // present
					frames[e&(1<<55-1)] = struct{}{}
				}
			}
		}
		pm.Close()
	}
	return float64(len(frames)) * pageSize / (1 << 20)
}

// cpuTicks is the summed user and system time of pids.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields count from after it.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += utime + stime
	}
	return total
}
