package bench

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, in which /proc/<pid>/stat counts CPU
// time; it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// sample is the summed resident memory (mean over the window, MiB), the
// anonymous part of it, and CPU (percent of one core) of some processes.
// The rest of RSS is mapped files, nearly all of it the hakube binary's
// pages: shared by every hakube process on the machine (the three servers
// of a 3-server target, containerd and shims on a node) and reclaimable.
type sample struct{ rss, anon, cpu float64 }

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
				done <- sample{rss: rss / float64(n), anon: anon / float64(n)}
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
