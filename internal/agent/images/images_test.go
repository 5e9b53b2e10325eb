package images

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
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

// TestRepin: an imported image whose record a pull rewrote without its pin
// is pinned again; a name a pull pointed at another image is left alone.
func TestRepin(t *testing.T) {
	dir := t.TempDir()
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	db := metadata.NewDB(bdb, cs, nil)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	if err := db.Init(ctx); err != nil {
		t.Fatal(err)
	}
	is := metadata.NewImageStore(db)
	desc := func(s string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString(s), Size: int64(len(s))}
	}
	imported := map[string]ocispec.Descriptor{"docker.io/hakube/a:1": desc("a"), "docker.io/hakube/b:1": desc("b"), "docker.io/hakube/gone:1": desc("gone")}
	// a: rewritten by a pull of the same image, its labels replaced.
	// b: pointed at another image by a pull.
	for name, target := range map[string]ocispec.Descriptor{"docker.io/hakube/a:1": desc("a"), "docker.io/hakube/b:1": desc("pulled")} {
		if _, err := is.Create(ctx, images.Image{Name: name, Target: target, Labels: map[string]string{"io.cri-containerd.image": "managed"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := repin(ctx, is, imported); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"docker.io/hakube/a:1": "pinned", "docker.io/hakube/b:1": ""} {
		img, err := is.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if img.Labels[PinnedLabel] != want || img.Labels["io.cri-containerd.image"] != "managed" {
			t.Errorf("%s: labels %v, want pin %q and the CRI's label kept", name, img.Labels, want)
		}
	}
}
