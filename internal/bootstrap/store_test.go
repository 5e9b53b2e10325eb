package bootstrap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore/kine/kinetest"
)

// TestRotate: on kine's etcd API (the narrowest the datastores offer), a
// rotation moves the data under the new token; the old token follows it,
// for reads and updates; running it again is done at once; a replaced token
// cannot be rotated to another; a chain of rotations is followed.
func TestRotate(t *testing.T) {
	cli := kinetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const old, next, third = "old-secret", "new-secret", "third-secret"
	want := bootstrap.Data{Files: map[string][]byte{"server-ca.crt": []byte("CA")}, Critical: bootstrap.Critical{ClusterCIDR: "10.42.0.0/16"}}
	if ok, err := bootstrap.Create(ctx, cli, old, want); err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	if err := bootstrap.Rotate(ctx, cli, old, next); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{old, next} {
		d, current, found, err := bootstrap.Load(ctx, cli, secret)
		if err != nil || !found || current != next || string(d.Files["server-ca.crt"]) != "CA" || d.ReplacedBy != "" {
			t.Fatalf("load with %s after the rotation: current %q, %+v, %v", secret, current, d, err)
		}
	}
	// What the old token opens alone names the new one and holds nothing else.
	resp, err := cli.Get(ctx, bootstrap.Key(old))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the old token's record: %v", err)
	}
	if d, err := bootstrap.Decrypt(old, resp.Kvs[0].Value); err != nil || d.ReplacedBy != next || d.Files != nil {
		t.Fatalf("the old token's record: %+v, %v", d, err)
	}
	// An update through the old token lands in the cluster's data.
	if _, err := bootstrap.Update(ctx, cli, old, func(d *bootstrap.Data) error { d.AgentSecret = "agent"; return nil }); err != nil {
		t.Fatal(err)
	}
	if d, _, _, err := bootstrap.Load(ctx, cli, next); err != nil || d.AgentSecret != "agent" {
		t.Fatalf("an update through the old token: %+v, %v", d, err)
	}
	if err := bootstrap.Rotate(ctx, cli, old, next); err != nil {
		t.Fatalf("run again: %v", err)
	}
	if err := bootstrap.Rotate(ctx, cli, old, third); err == nil {
		t.Fatal("a replaced token was rotated again")
	}
	if err := bootstrap.Rotate(ctx, cli, next, third); err != nil {
		t.Fatal(err)
	}
	if d, current, _, err := bootstrap.Load(ctx, cli, old); err != nil || current != third || d.AgentSecret != "agent" {
		t.Fatalf("two rotations later, the first token: current %q, %+v, %v", current, d, err)
	}
	if _, _, _, err := bootstrap.Load(ctx, cli, "another"); !errors.Is(err, bootstrap.ErrOtherToken) {
		t.Fatalf("a token the cluster never had: %v", err)
	}

	// Interrupted after its copy: the new token opens nothing (no second
	// cluster), and running the rotation again finishes it.
	const fourth = "fourth-secret"
	d, _, _, err := bootstrap.Load(ctx, cli, third)
	if err != nil {
		t.Fatal(err)
	}
	putPending(t, cli, fourth, d)
	if _, _, _, err := bootstrap.Load(ctx, cli, fourth); !errors.Is(err, bootstrap.ErrPending) {
		t.Fatalf("an unfinished rotation's token: %v", err)
	}
	if _, err := bootstrap.Update(ctx, cli, fourth, func(*bootstrap.Data) error { return nil }); !errors.Is(err, bootstrap.ErrPending) {
		t.Fatalf("an update through an unfinished rotation's token: %v", err)
	}
	if err := bootstrap.Rotate(ctx, cli, third, fourth); err != nil {
		t.Fatal(err)
	}
	if d, current, _, err := bootstrap.Load(ctx, cli, fourth); err != nil || current != fourth || d.Pending || d.AgentSecret != "agent" {
		t.Fatalf("after the rotation run again: current %q, %+v, %v", current, d, err)
	}

	// Interrupted after its record: the old token reaches the copy, and
	// Finish unmarks it.
	const fifth = "fifth-secret"
	putPending(t, cli, fifth, d)
	forward, err := bootstrap.Encrypt(fourth, bootstrap.Data{ReplacedBy: fifth})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, bootstrap.Key(fourth), string(forward)); err != nil {
		t.Fatal(err)
	}
	if _, current, _, err := bootstrap.Load(ctx, cli, old); err != nil || current != fifth {
		t.Fatalf("a committed rotation not finished, from the first token: current %q, %v", current, err)
	}
	if err := bootstrap.Finish(ctx, cli, fifth); err != nil {
		t.Fatal(err)
	}
	if d, _, _, err := bootstrap.Load(ctx, cli, fifth); err != nil || d.Pending {
		t.Fatalf("after Finish: %+v, %v", d, err)
	}
}

func putPending(t *testing.T, cli *clientv3.Client, secret string, d bootstrap.Data) {
	t.Helper()
	d.Pending = true
	blob, err := bootstrap.Encrypt(secret, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), bootstrap.Key(secret), string(blob)); err != nil {
		t.Fatal(err)
	}
}
