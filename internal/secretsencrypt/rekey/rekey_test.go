package rekey

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore/kine/kinetest"
	"github.com/hakube/hakube/internal/secretsencrypt"
)

// TestStepsBelongToTheirChange: on kine's etcd API, a second change cannot
// begin while one is under way, and a run resuming a change that another
// run finished (and another change began) stores nothing.
func TestStepsBelongToTheirChange(t *testing.T) {
	cli := kinetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := secretsencrypt.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "test-token-secret"
	if ok, err := bootstrap.Create(ctx, cli, secret, bootstrap.Data{Encryption: keys}); err != nil || !ok {
		t.Fatalf("seeding bootstrap data: %v %v", ok, err)
	}
	c := Config{KV: cli, Secret: secret, Out: io.Discard}

	a := &change{Config: c, op: RotateKeys}
	st, err := a.begin(ctx, func(s *secretsencrypt.State) { s.Active = "" })
	if err != nil || st.Change != string(RotateKeys) || st.ChangeID == "" || st.ChangeID != a.id {
		t.Fatalf("begin: %+v, %v", st, err)
	}
	if _, err := (&change{Config: c, op: Disable}).begin(ctx, func(*secretsencrypt.State) {}); err == nil || !strings.Contains(err.Error(), "began meanwhile") {
		t.Fatalf("a second change began during the first: %v", err)
	}
	// b resumes a's change, as a second run of the same command would.
	b := &change{Config: c, op: RotateKeys, id: a.id}
	if _, err := b.step(ctx, func(s *secretsencrypt.State) { s.Active = s.Keys[0].Name }); err != nil {
		t.Fatalf("a step of the resumed change: %v", err)
	}
	// a finishes it, and a disable begins.
	if _, err := a.step(ctx, func(s *secretsencrypt.State) { s.Change, s.ChangeID = "", "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := (&change{Config: c, op: Disable}).begin(ctx, func(s *secretsencrypt.State) { s.Active = "" }); err != nil {
		t.Fatal(err)
	}
	// b's next step would drop keys under the disable's feet: refused.
	if _, err := b.step(ctx, func(s *secretsencrypt.State) { s.Keys = nil }); err == nil || !strings.Contains(err.Error(), "another run") {
		t.Fatalf("a stale run stored a step: %v", err)
	}
	d, _, _, err := bootstrap.Load(ctx, cli, secret)
	if err != nil || len(d.Encryption.Keys) != 1 || d.Encryption.Change != string(Disable) {
		t.Fatalf("after the refused step: %+v, %v", d.Encryption, err)
	}
}
