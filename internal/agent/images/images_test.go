package images

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestTarballs: the image tarballs of every directory, in order, each
// directory's sorted; other files, directories and a missing directory are
// skipped.
func TestTarballs(t *testing.T) {
	shipped, user := t.TempDir(), t.TempDir()
	for _, f := range []string{"pause.tar", "coredns.tar"} {
		if err := os.WriteFile(filepath.Join(shipped, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"b.tar.zst", "a.tar.gz", "c.tgz", "d.tar.zstd", "README", "e.tar.bz2"} {
		if err := os.WriteFile(filepath.Join(user, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(user, "dir.tar"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Tarballs([]string{shipped, filepath.Join(user, "missing"), user})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(shipped, "coredns.tar"), filepath.Join(shipped, "pause.tar"),
		filepath.Join(user, "a.tar.gz"), filepath.Join(user, "b.tar.zst"), filepath.Join(user, "c.tgz"), filepath.Join(user, "d.tar.zstd")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}
