package status

import "testing"

func TestNew(t *testing.T) {
	voter := func(name string, healthy bool, index uint64) Member {
		return Member{Name: name, Role: "voter", Healthy: healthy, RaftIndex: index, DBSize: 1000, DBFree: 250}
	}
	for _, tc := range []struct {
		name    string
		members []Member
		leader  string
		healthy bool
		canLose int
		summary string
	}{
		{"three healthy", []Member{voter("a", true, 10), voter("b", true, 8), voter("c", true, 10)}, "a", true, 1, "healthy: 3 voters, can lose 1 server"},
		{"one down", []Member{voter("a", true, 10), voter("b", false, 0), voter("c", true, 10)}, "a", false, 0, "degraded: b not healthy; 2 of 3 voters healthy, can lose no server"},
		{"quorum lost", []Member{voter("a", true, 10), voter("b", false, 0), voter("c", false, 0)}, "", false, -1, "no quorum: 1 of 3 voters healthy, 2 needed"},
		{"five with a learner", []Member{voter("a", true, 5), voter("b", true, 5), voter("c", true, 5), voter("d", true, 5), voter("e", true, 5),
			{Name: "f", Role: "learner", Healthy: true, RaftIndex: 2}}, "c", true, 2, "healthy: 5 voters, can lose 2 servers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New("etcd", tc.members, tc.leader)
			if s.Healthy != tc.healthy || s.CanLose != tc.canLose || s.Summary != tc.summary {
				t.Fatalf("healthy %v, can lose %d, %q; want %v, %d, %q", s.Healthy, s.CanLose, s.Summary, tc.healthy, tc.canLose, tc.summary)
			}
		})
	}
	s := New("dqlite", []Member{voter("a", true, 10), voter("b", true, 7)}, "a")
	if s.Members[0].Role != "leader" || s.Members[1].Lag != 3 || s.Members[1].Fragmentation != 0.25 {
		t.Fatalf("members: %+v", s.Members)
	}
}
