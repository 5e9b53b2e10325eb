// Package kinetest runs a real kine on SQLite for unit tests that need the
// etcd API a server's datastore speaks.
package kinetest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/kine"
)

// Start runs kine in a temporary directory until the test ends and returns
// a client of its etcd API.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	k := kine.New(kine.Config{Socket: filepath.Join(dir, "kine.sock"), DBPath: filepath.Join(dir, "state.db")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := k.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop() })
	if err := k.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	cli, err := datastore.Client(k.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
