package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
)

// importCheck imports a tarball with containerd's own importer (what the node's client.Import runs) into
// a content store, and checks that every image it names is complete for this platform. It returns the
// names, as the node's import gives them (io.containerd.image.name), and the store's blob count.
func importCheck(t *testing.T, tarball string) ([]string, int) {
	t.Helper()
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	index, err := archive.ImportIndex(ctx, cs, f)
	if err != nil {
		t.Fatal(err)
	}
	children, err := images.Children(ctx, cs, index)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range children {
		name := m.Annotations[images.AnnotationImageName]
		if name == "" {
			t.Fatalf("manifest %s has no %s", m.Digest, images.AnnotationImageName)
		}
		names = append(names, name)
		ok, _, present, missing, err := images.Check(ctx, cs, m, platforms.Default())
		if err != nil || !ok || len(missing) > 0 {
			t.Errorf("%s: complete %v, missing %v: %v", name, ok, missing, err)
		}
		cfg, err := images.Config(ctx, cs, m, platforms.Default())
		if err != nil {
			t.Errorf("%s: config: %v", name, err)
		}
		ids, err := images.RootFS(ctx, cs, cfg)
		if err != nil || len(ids) != len(present)-1 { // present holds the config and the layers
			t.Errorf("%s: %d diff_ids for %d blobs: %v", name, len(ids), len(present), err)
		}
	}
	n := 0
	cs.Walk(ctx, func(content.Info) error { n++; return nil })
	return names, n
}

func TestContainerdImport(t *testing.T) {
	d := t.TempDir()
	tree(t, filepath.Join(d, "base"))
	write(t, filepath.Join(d, "app"), "app", 0o755)
	s := &Spec{
		Layers: []Layer{{Name: "base", Roots: []string{filepath.Join(d, "base")}}, {Name: "app", Files: []string{filepath.Join(d, "app") + "=/app"}}},
		Images: []Image{
			{Name: "example.com/a:1.8", Layers: []string{"base", "app"}, Cmd: []string{"/app"}},
			{Name: "example.com/b:1.8", Layers: []string{"base"}, Cmd: []string{"sh"}},
		},
	}
	out := filepath.Join(d, "out.tar")
	if err := Write(out, s); err != nil {
		t.Fatal(err)
	}
	names, blobs := importCheck(t, out)
	if len(names) != 2 || names[0] != "example.com/a:1.8" || names[1] != "example.com/b:1.8" {
		t.Errorf("names %v", names)
	}
	// index, 2 manifests, 2 configs, 2 layers: the base once.
	if blobs != 7 {
		t.Errorf("%d blobs in the store, want 7", blobs)
	}
}

func TestContainerdImportConformance(t *testing.T) {
	tarball := conformanceTarball(t)
	names, blobs := importCheck(t, tarball)
	t.Logf("%d images, %d blobs: %v", len(names), blobs, names)
	if len(names) != 11 {
		t.Errorf("%d images, want 11", len(names))
	}
}
