package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	nodeimages "github.com/hakube/hakube/internal/agent/images"
)

// store is containerd's own metadata and content stores on a temp dir.
type store struct {
	images  images.Store
	content content.Store
	ctx     context.Context
}

func newStore(t *testing.T) *store {
	t.Helper()
	dir := t.TempDir()
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bdb.Close() })
	db := metadata.NewDB(bdb, cs, nil)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	if err := db.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return &store{images: metadata.NewImageStore(db), content: db.ContentStore(), ctx: ctx}
}

func (s *store) blob(t *testing.T, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(s.ctx, s.content, d.Digest.String(), bytes.NewReader(b), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *store) json(t *testing.T, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return s.blob(t, mediaType, b)
}

// manifest stores a one-layer image manifest and returns it and its layer.
func (s *store) manifest(t *testing.T, layer []byte) (ocispec.Descriptor, ocispec.Descriptor) {
	t.Helper()
	cfg := s.json(t, ocispec.MediaTypeImageConfig, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	l := s.blob(t, ocispec.MediaTypeImageLayer, layer)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{l}}
	m.SchemaVersion = 2
	return s.json(t, ocispec.MediaTypeImageManifest, m), l
}

func (s *store) image(t *testing.T, name string, target ocispec.Descriptor, imported bool) {
	t.Helper()
	img := images.Image{Name: name, Target: target, Labels: map[string]string{}}
	if imported {
		img.Labels[nodeimages.ImportedLabel] = "agnhost.tar"
	}
	if _, err := s.images.Create(s.ctx, img); err != nil {
		t.Fatal(err)
	}
}

// TestMirror: containerd's own resolver and fetcher, pointed at the mirror
// as their only host, get an imported image by tag and by digest, and
// nothing of an image that was pulled rather than imported, nor of another
// registry's repository of the same path.
func TestMirror(t *testing.T) {
	s := newStore(t)
	m, layer := s.manifest(t, []byte("imported layer"))
	// An index whose second platform the import skipped (no content).
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("arm64"), Size: 5,
		Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}}
	m.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{m, missing}}
	idx.SchemaVersion = 2
	index := s.json(t, ocispec.MediaTypeImageIndex, idx)
	s.image(t, "registry.k8s.io/e2e-test-images/agnhost:2.55", index, true)
	private, privateLayer := s.manifest(t, []byte("a layer pulled with a pod's credentials"))
	s.image(t, "registry.k8s.io/e2e-test-images/private:1", private, false)

	srv := httptest.NewServer(&Handler{Namespace: "k8s.io", Stores: func() (images.Store, content.Provider, error) {
		return s.images, s.content, nil
	}})
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: func(string) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{{Client: srv.Client(), Host: u.Host, Scheme: "http", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve}}, nil
	}})
	ctx := context.Background()

	_, got, err := resolver.Resolve(ctx, "registry.k8s.io/e2e-test-images/agnhost:2.55")
	if err != nil || got.Digest != index.Digest || got.Size != index.Size || got.MediaType != index.MediaType {
		t.Fatalf("resolve by tag: %+v, %v; want %+v", got, err, index)
	}
	_, got, err = resolver.Resolve(ctx, "registry.k8s.io/e2e-test-images/agnhost@"+m.Digest.String())
	if err != nil || got.Digest != m.Digest || got.MediaType != m.MediaType {
		t.Fatalf("resolve by digest: %+v, %v; want %+v", got, err, m)
	}
	f, err := resolver.Fetcher(ctx, "registry.k8s.io/e2e-test-images/agnhost:2.55")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []ocispec.Descriptor{index, m, layer} {
		rc, err := f.Fetch(ctx, d)
		if err != nil {
			t.Fatalf("fetch %s: %v", d.MediaType, err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if digest.FromBytes(b) != d.Digest {
			t.Fatalf("fetch %s: %d bytes of digest %s, want %s", d.MediaType, len(b), digest.FromBytes(b), d.Digest)
		}
	}

	for _, ref := range []string{
		"registry.k8s.io/e2e-test-images/private:1",                          // pulled, not imported
		"registry.k8s.io/e2e-test-images/private@" + private.Digest.String(), // nor by digest
		"docker.io/e2e-test-images/agnhost:2.55",                             // another registry
		"registry.k8s.io/e2e-test-images/agnhost:2.66",                       // another tag
		"registry.k8s.io/e2e-test-images/agnhost@" + missing.Digest.String(),
	} {
		if _, _, err := resolver.Resolve(ctx, ref); !errdefs.IsNotFound(err) {
			t.Errorf("resolve %s: %v, want not found", ref, err)
		}
	}
	// The private layer's digest under the imported repository (the
	// fetcher opens lazily: the error comes with the first read).
	if rc, err := f.Fetch(ctx, privateLayer); err == nil {
		b, err := io.ReadAll(rc)
		rc.Close()
		if !errdefs.IsNotFound(err) {
			t.Errorf("a pulled image's layer under an imported repository: %q, %v; want not found", b, err)
		}
	}

	get := func(method, path string, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("GET", "/v2/"); r.StatusCode != 200 || r.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("/v2/: %s %v", r.Status, r.Header)
	}
	if r := get("GET", "/v2/e2e-test-images/agnhost/manifests/2.55"); r.StatusCode != 404 {
		t.Errorf("without ns: %s", r.Status)
	}
	if r := get("PUT", "/v2/e2e-test-images/agnhost/manifests/2.55?ns=registry.k8s.io"); r.StatusCode != 405 {
		t.Errorf("PUT: %s", r.Status)
	}
	r := get("HEAD", "/v2/e2e-test-images/agnhost/manifests/2.55?ns=registry.k8s.io")
	if r.StatusCode != 200 || r.ContentLength != index.Size || r.Header.Get("Docker-Content-Digest") != index.Digest.String() ||
		r.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Errorf("HEAD manifest: %s, length %d, %v", r.Status, r.ContentLength, r.Header)
	}
	if r := get("GET", "/v2/e2e-test-images/agnhost/blobs/"+layer.Digest.String()+"?ns=registry.k8s.io", "Range", "bytes=9-"); r.StatusCode != 206 || r.ContentLength != layer.Size-9 {
		t.Errorf("a ranged blob: %s, length %d", r.Status, r.ContentLength)
	}
}
