package snapshot

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDir(t *testing.T) {
	d := Dir(filepath.Join(t.TempDir(), "snapshots"))
	t0 := time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)
	var names []string
	for i, compress := range []bool{false, true, false} {
		m, err := d.Save(Meta{Name: Name("on-demand", "s1", t0.Add(time.Duration(i)*time.Hour)), Node: "s1", Datastore: "etcd",
			Created: t0.Add(time.Duration(i) * time.Hour)}, strings.NewReader(strings.Repeat("data", 1000)), compress)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Verify(m.Name); err != nil {
			t.Fatal(err)
		}
		names = append(names, m.Name)
	}
	if !strings.HasSuffix(names[1], ".gz") {
		t.Fatalf("compressed snapshot named %s", names[1])
	}
	zr, err := gzip.NewReader(mustOpen(t, filepath.Join(string(d), names[1])))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(zr); !bytes.Equal(b, []byte(strings.Repeat("data", 1000))) {
		t.Fatal("the compressed snapshot does not hold the data")
	}
	if _, err := d.Save(Meta{Name: names[0]}, strings.NewReader("x"), false); err == nil {
		t.Fatal("a snapshot was overwritten")
	}
	if _, err := d.Save(Meta{Name: "../escape"}, strings.NewReader("x"), false); err == nil {
		t.Fatal("a name with a path was accepted")
	}

	// A damaged file is caught.
	if err := os.WriteFile(filepath.Join(string(d), names[2]), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Verify(names[2]); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("verify of a damaged snapshot: %v", err)
	}

	all, err := d.List()
	if err != nil || len(all) != 3 || all[0].Name != names[0] || all[2].Name != names[2] || all[0].SHA256 == "" {
		t.Fatalf("list: %+v %v", all, err)
	}
	// A prefix that names none of them prunes nothing; "" prunes the oldest.
	if gone, err := d.Prune("etcd-snapshot-s1-", 1); err != nil || len(gone) != 0 {
		t.Fatalf("prune of scheduled snapshots deleted on-demand ones: %v %v", gone, err)
	}
	gone, err := d.Prune("", 2)
	if err != nil || len(gone) != 1 || gone[0] != names[0] {
		t.Fatalf("prune: %v %v", gone, err)
	}
	if err := d.Delete(names[1], "no-such"); err == nil || !strings.Contains(err.Error(), "no snapshot called no-such") {
		t.Fatalf("delete with a missing name: %v", err)
	}
	if all, _ := d.List(); len(all) != 1 || all[0].Name != names[2] {
		t.Fatalf("after prune and delete: %+v", all)
	}
	if _, err := os.Stat(d.meta(names[1])); !os.IsNotExist(err) {
		t.Fatal("metadata of a deleted snapshot is left")
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
