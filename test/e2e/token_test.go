package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/test/harness"
)

const rotatedSecret = "e2e-rotated-secret"

// tokenRotation runs 'hakube token rotate' on server 1 while every server
// runs. Every server takes the new token, in its data dir and at its join
// endpoint: a joiner holding the old one is refused, short or full. Running
// it again finishes at once. Server 3's configuration gets the new token
// (the next subtests rejoin it through server 1 with it: a join with the new
// token); servers 1 and 2 keep the old one in theirs, as a forgotten service
// file would: a restart, and the cold restart of every server, takes the new
// one from their data dirs.
func tokenRotation(t *testing.T, c *cluster, fig figures) {
	s1, s2, s3 := c.Servers[0], c.Servers[1], c.Servers[2]
	oldFull := harness.ReadToken(t, s1.Layout().Token())

	if out, code := s1.Hakube("token", "rotate"); code == 0 || !strings.Contains(out, "--new-token is required") {
		t.Fatalf("token rotate without --new-token: exit %d\n%s", code, out)
	}
	began := time.Now()
	out, code := s1.Hakube("token", "rotate", "--new-token", rotatedSecret)
	fig.Record(t, "token_rotate", time.Since(began))
	if code != 0 || !strings.Contains(out, "servers that took the new token: s1, s2, s3") {
		t.Fatalf("token rotate: exit %d\n%s", code, out)
	}
	t.Logf("hakube token rotate on %s:\n%s", s1.Name, out)
	for _, s := range c.Servers {
		if got := harness.ReadToken(t, s.Layout().Token()); got.Secret != rotatedSecret || got.CAHash != oldFull.CAHash {
			t.Fatalf("%s's token file after the rotation: %s", s.Name, got)
		}
	}
	if out, code := s2.Hakube("token", "rotate", "--new-token", rotatedSecret); code != 0 || !strings.Contains(out, "the new one already") {
		t.Fatalf("token rotate run again on %s: exit %d\n%s", s2.Name, code, out)
	}

	late := c.Net.Hosts[3].Server(t, "late")
	if out, code := late.RunToExit("--server", s2.URL(), "--token", secret); code == 0 || !strings.Contains(out, "could not prove it knows the token") {
		t.Fatalf("join with the old short token: exit %d\n%s", code, out)
	}
	if out, code := late.RunToExit("--server", s3.URL(), "--token", oldFull.String()); code == 0 || !strings.Contains(out, "refused the token") {
		t.Fatalf("join with the old full token: exit %d\n%s", code, out)
	}

	s3.Env = []string{"HAKUBE_TOKEN=" + rotatedSecret}
	s2.Stop()
	s2.Start()
	if !strings.Contains(s2.CurrentLog(), "the token given was replaced by 'hakube token rotate'") {
		t.Errorf("%s, restarted with the old token, did not say it uses the new one:\n%s", s2.Name, s2.LogTail(20))
	}
	c.waitVoters(s1, 3)
}
