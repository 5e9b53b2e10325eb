package secretsencrypt

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/datastore/kine/kinetest"
)

// TestInspect: on a real datastore (kine on SQLite), Secrets are counted by
// the key that wrote them, across pages; one in clear, or under an older
// key, means not all are under the active key; this server's file is
// current only when it is the cluster's configuration.
func TestInspect(t *testing.T) {
	cli := kinetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s, err := New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	active := s.Active
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	// 600 Secrets under the active key: more than one page.
	for i := range 600 {
		if _, err := cli.Put(ctx, fmt.Sprintf("%sns/s-%03d", SecretsPrefix, i), "k8s:enc:secretbox:v1:"+active+":ciphertext"); err != nil {
			t.Fatal(err)
		}
	}
	// Not a Secret: not counted.
	if _, err := cli.Put(ctx, "/registry/configmaps/ns/c", "k8s\x00 in clear"); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(ctx, cli, s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Active != active || st.Secrets != 600 || st.ByKey[active] != 600 || !st.AllActive || !st.ConfigCurrent {
		t.Fatalf("all under the active key: %+v", st)
	}

	for key, value := range map[string]string{"ns/clear": "k8s\x00 in clear", "ns/old": "k8s:enc:secretbox:v1:older:ciphertext",
		"ns/other": "k8s:enc:aescbc:v1:key1:ciphertext"} {
		if _, err := cli.Put(ctx, SecretsPrefix+key, value); err != nil {
			t.Fatal(err)
		}
	}
	st, err = Inspect(ctx, cli, s, []byte("another configuration"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Secrets != 603 || st.ByKey[Clear] != 1 || st.ByKey["older"] != 1 || len(st.Unreadable) != 1 || st.AllActive || st.ConfigCurrent {
		t.Fatalf("one in clear, one under an older key, one of another provider, a stale file: %+v", st)
	}
	// A cluster without keys: its file is identity alone, and Secrets
	// under keys are not where they should be.
	identity, err := (*State)(nil).Config()
	if err != nil {
		t.Fatal(err)
	}
	st, err = Inspect(ctx, cli, nil, identity)
	if err != nil {
		t.Fatal(err)
	}
	if st.Enabled || st.AllActive || !st.ConfigCurrent {
		t.Fatalf("no encryption: %+v", st)
	}
	// Servers: one current, one behind, one down, one gone.
	now := time.Now()
	want := Hash(identity)
	st.AddServers(nil, []Report{
		{Server: "a", Loaded: want, Updated: now},
		{Server: "b", Loaded: "sha256:other", Updated: now},
		{Server: "c", Loaded: "sha256:other", Updated: now.Add(-2 * DownAfter)},
		{Server: "d", Loaded: "sha256:other", Updated: now.Add(-2 * GoneAfter)},
	}, now)
	var states []string
	for _, s := range st.Servers {
		states = append(states, s.Name+"="+s.State)
	}
	if got := strings.Join(states, ","); got != "a=current,b=behind,c=down,d=gone" || st.ServersAgree {
		t.Fatalf("servers: %s, agree %v", got, st.ServersAgree)
	}
	st.AddServers(nil, []Report{{Server: "a", Loaded: want, Updated: now}, {Server: "c", Updated: now.Add(-2 * DownAfter)}}, now)
	if !st.ServersAgree {
		t.Fatalf("the running servers agree, a down one does not count: %+v", st.Servers)
	}

	// Reports through kine's etcd API: written, listed by name, deleted in
	// the form kine supports.
	for _, name := range []string{"s2", "s1"} {
		if err := WriteReport(ctx, cli, Report{Server: name, Loaded: want, Updated: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := DeleteReport(ctx, cli, "s2"); err != nil {
		t.Fatal(err)
	}
	if err := DeleteReport(ctx, cli, "never-reported"); err != nil {
		t.Fatal(err)
	}
	reports, err := ReadReports(ctx, cli)
	if err != nil || len(reports) != 1 || reports[0].Server != "s1" || reports[0].Loaded != want {
		t.Fatalf("reports after deleting s2: %+v (%v)", reports, err)
	}
}
