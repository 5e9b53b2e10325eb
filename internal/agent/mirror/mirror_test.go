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
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// store is containerd's own content store on a temp dir.
type store struct {
	content content.Store
	ctx     context.Context
}

func newStore(t *testing.T) *store {
	t.Helper()
	cs, err := local.NewStore(filepath.Join(t.TempDir(), "content"))
	if err != nil {
		t.Fatal(err)
	}
	return &store{content: cs, ctx: context.Background()}
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

const token = "t0ken"

// TestMirror: containerd's own resolver and fetcher, pointed at the mirror
// as their only host, get an imported image by tag and by digest, and
// nothing of an image that was not imported (pulled, with a pod's
// credentials), nor of another registry's repository of the same path; a
// request without the token gets nothing.
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
	// In the content store, as a pulled image's would be, but not imported.
	private, privateLayer := s.manifest(t, []byte("a layer pulled with a pod's credentials"))
	imported := map[string]ocispec.Descriptor{"registry.k8s.io/e2e-test-images/agnhost:2.55": index}

	srv := httptest.NewServer(&Handler{Namespace: "k8s.io", Token: token,
		Imported: func() map[string]ocispec.Descriptor { return imported },
		Content:  func() (content.Provider, error) { return s.content, nil }})
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: func(string) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{{Client: srv.Client(), Host: u.Host, Scheme: "http", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve, Header: http.Header{TokenHeader: {token}}}}, nil
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
		"registry.k8s.io/e2e-test-images/private:1",                          // not imported
		"registry.k8s.io/e2e-test-images/private@" + private.Digest.String(), // nor by digest
		"registry.k8s.io/e2e-test-images/agnhost@" + private.Digest.String(), // nor under an imported repository
		"docker.io/e2e-test-images/agnhost:2.55",                             // another registry
		"registry.k8s.io/e2e-test-images/agnhost:2.66",                       // another tag
		"registry.k8s.io/e2e-test-images/agnhost@" + missing.Digest.String(), // a platform not imported
	} {
		if _, _, err := resolver.Resolve(ctx, ref); !errdefs.IsNotFound(err) {
			t.Errorf("resolve %s: %v, want not found", ref, err)
		}
	}
	// The private layer's digest under the imported repository (the
	// fetcher opens lazily: the error may come with the first read).
	rc, err := f.Fetch(ctx, privateLayer)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Errorf("a layer not imported was served: %q", b)
		}
	}
	if !errdefs.IsNotFound(err) {
		t.Errorf("a layer not imported: %v, want not found", err)
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
	const tag = "/v2/e2e-test-images/agnhost/manifests/2.55?ns=registry.k8s.io"
	for _, h := range [][]string{nil, {TokenHeader, "wrong"}} {
		if r := get("GET", tag, h...); r.StatusCode != 401 {
			t.Errorf("token %v: %s", h, r.Status)
		}
	}
	if r := get("GET", "/v2/", TokenHeader, token); r.StatusCode != 200 || r.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("/v2/: %s %v", r.Status, r.Header)
	}
	// The registry in the path instead of ns names no image.
	if r := get("GET", "/v2/registry.k8s.io/e2e-test-images/agnhost/manifests/2.55", TokenHeader, token); r.StatusCode != 404 {
		t.Errorf("without ns: %s", r.Status)
	}
	if r := get("PUT", tag, TokenHeader, token); r.StatusCode != 405 {
		t.Errorf("PUT: %s", r.Status)
	}
	r := get("HEAD", tag, TokenHeader, token)
	if r.StatusCode != 200 || r.ContentLength != index.Size || r.Header.Get("Docker-Content-Digest") != index.Digest.String() ||
		r.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Errorf("HEAD manifest: %s, length %d, %v", r.Status, r.ContentLength, r.Header)
	}
	if r := get("GET", "/v2/e2e-test-images/agnhost/blobs/"+layer.Digest.String()+"?ns=registry.k8s.io", TokenHeader, token, "Range", "bytes=9-"); r.StatusCode != 206 || r.ContentLength != layer.Size-9 {
		t.Errorf("a ranged blob: %s, length %d", r.Status, r.ContentLength)
	}
}

// TestComponent: the component serves on loopback with a new token at each
// start, which Host gives containerd, and stops serving at Stop.
func TestComponent(t *testing.T) {
	m := New(Config{Socket: filepath.Join(t.TempDir(), "none.sock"), Namespace: "k8s.io",
		Imported: func() map[string]ocispec.Descriptor { return nil }})
	if u, _ := m.Host(); u != "" {
		t.Fatalf("before Start: %q", u)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	u, header := m.Host()
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" || pu.Hostname() != "127.0.0.1" || len(header[TokenHeader]) != 32 {
		t.Fatalf("Host: %q %v", u, header)
	}
	for h, want := range map[string]int{header[TokenHeader]: 200, "": 401} {
		req, _ := http.NewRequest("GET", u+"/v2/", nil)
		req.Header.Set(TokenHeader, h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("token %q: %s, want %d", h, resp.Status, want)
		}
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(u + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("still serving after Stop")
	}
}
