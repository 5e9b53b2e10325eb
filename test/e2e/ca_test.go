package e2e

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/token"
	"github.com/hakube/hakube/test/harness"
)

// caRotation runs 'hakube certificate rotate-ca' on server 1 while every
// server runs: each server holds the same new bundle, presents a
// certificate of the new CA on its API port, and the datastore keeps its
// voters and its data. A server restarted with a full token pinned to the
// old CA (a configuration nobody updated) starts, and says to update it.
func caRotation(t *testing.T, c *cluster, fig figures) {
	s1, s2 := c.Servers[0], c.Servers[1]
	oldFull := harness.ReadToken(t, s1.Layout().Token())
	began := time.Now()
	out, bundle, newCA := harness.RotateCA(t, s1)
	fig.Record(t, "rotate_ca", time.Since(began))
	t.Logf("hakube certificate rotate-ca on %s (%s):\n%s", s1.Name, time.Since(began).Round(time.Second), out)

	for _, s := range c.Servers {
		if b, err := os.ReadFile(s.Layout().TLS().Cert(pki.ServerCA)); err != nil || string(b) != string(bundle) {
			t.Errorf("%s holds another server CA bundle than %s (%v)", s.Name, s1.Name, err)
		}
		cert, err := c.HostOf(s).PresentedCert(net.JoinHostPort(s.Host, "6443"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(newCA); err != nil {
			t.Errorf("%s presents a certificate the new server CA did not sign: %v", s.Name, err)
		}
	}
	c.waitVoters(s1, 3)
	c.CheckSameConfigMaps(t, "default")

	pinned := token.Token{User: token.ServerUser, Secret: oldFull.Secret, CAHash: oldFull.CAHash}
	env := s2.Env
	s2.Env = []string{"HAKUBE_TOKEN=" + pinned.String()}
	s2.Stop()
	s2.Start()
	s2.Env = env
	if !strings.Contains(s2.CurrentLog(), "pinned to a CA 'hakube certificate rotate-ca' replaced") {
		t.Errorf("%s, restarted with a token pinned to the old CA, did not say it uses the new pin:\n%s", s2.Name, s2.LogTail(20))
	}
	c.waitVoters(s1, 3)
}
