// Package mirror is the node's registry mirror: a read-only OCI distribution
// API on loopback that serves the images the node imported from tarballs
// out of containerd's own content store. containerd's hosts.toml names it
// before every other host, so a pod with imagePullPolicy: Always of an
// imported image starts with no registry reachable (an air-gapped node would
// otherwise fail the pull, though the image is right there), and any other
// image falls through to the next host on the mirror's 404.
//
// Only imported images are served (images.ImportedLabel): an image pulled
// with a pod's credentials must not reach a pod without them, and
// imagePullPolicy: Always (the AlwaysPullImages admission plugin) is how a
// cluster makes the registry check those credentials. An imported image is
// already any pod's with imagePullPolicy: IfNotPresent.
package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	ctd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/klog/v2"

	nodeimages "github.com/hakube/hakube/internal/agent/images"
)

// Config is the containerd whose images are served.
type Config struct {
	Socket, Namespace string
}

// Mirror is the component.
type Mirror struct {
	cfg Config
	ln  net.Listener
	srv *http.Server

	mu sync.Mutex
	cl *ctd.Client
}

// New returns the component.
func New(cfg Config) *Mirror { return &Mirror{cfg: cfg} }

func (m *Mirror) Name() string { return "registry mirror" }

func (m *Mirror) Init(context.Context) error { return nil }

// Start listens on a free loopback port (containerd learns it from
// Endpoint when its hosts.toml files are written, so a fixed port cannot
// collide with anything) and serves.
func (m *Mirror) Start(context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("registry mirror: %w", err)
	}
	m.ln = ln
	m.srv = &http.Server{Handler: &Handler{Namespace: m.cfg.Namespace, Stores: m.stores}, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("registry mirror: %v", err)
		}
	}()
	return nil
}

// Endpoint is the mirror's URL, for hosts.toml; "" before Start.
func (m *Mirror) Endpoint() string {
	if m.ln == nil {
		return ""
	}
	return "http://" + m.ln.Addr().String()
}

// Stop ends the server (a pull in flight gets 5 s) and the containerd client.
func (m *Mirror) Stop() error {
	if m.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cl != nil {
		_ = m.cl.Close()
		m.cl = nil
	}
	return err
}

// stores connects to containerd at the first request: containerd starts
// after the mirror, and only containerd asks the mirror for anything.
func (m *Mirror) stores() (images.Store, content.Provider, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cl == nil {
		cl, err := ctd.New(m.cfg.Socket, ctd.WithDefaultNamespace(m.cfg.Namespace), ctd.WithTimeout(5*time.Second))
		if err != nil {
			return nil, nil, err
		}
		m.cl = cl
	}
	return m.cl.ImageService(), m.cl.ContentStore(), nil
}

// Handler serves the distribution API's read side (the version check,
// manifests and blobs by GET and HEAD) for the imported images of Stores'
// containerd namespace.
// containerd names the registry a request is for in the "ns" query
// parameter (it adds it whenever the host is not the registry itself); a
// request without it is for no image here.
type Handler struct {
	Namespace string
	Stores    func() (images.Store, content.Provider, error)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		distError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this mirror is read-only")
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		_, _ = io.WriteString(w, "{}")
		return
	}
	repo, kind, ref, ok := parsePath(r.URL.Path)
	ns := r.URL.Query().Get("ns")
	if !ok || ns == "" {
		distError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such repository here")
		return
	}
	is, cs, err := h.Stores()
	if err != nil {
		distError(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	ctx := namespaces.WithNamespace(r.Context(), h.Namespace)
	desc, err := find(ctx, is, cs, ns+"/"+repo, kind, ref)
	if errdefs.IsNotFound(err) {
		distError(w, http.StatusNotFound, map[string]string{"manifests": "MANIFEST_UNKNOWN", "blobs": "BLOB_UNKNOWN"}[kind], err.Error())
		return
	} else if err != nil {
		distError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	ra, err := cs.ReaderAt(ctx, desc)
	if errdefs.IsNotFound(err) {
		distError(w, http.StatusNotFound, "BLOB_UNKNOWN", err.Error())
		return
	} else if err != nil {
		distError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	defer ra.Close()
	mediaType := desc.MediaType
	if kind == "blobs" || mediaType == "" {
		mediaType = "application/octet-stream"
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", desc.Digest.String())
	w.Header().Set("Etag", `"`+desc.Digest.String()+`"`)
	// ServeContent answers HEAD, ranges (a resumed layer) and the length.
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(ra, 0, ra.Size()))
}

// parsePath splits /v2/<repo>/(manifests|blobs)/<ref>; repo may have slashes.
func parsePath(p string) (repo, kind, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", "", false
	}
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(rest, "/"+k+"/"); i > 0 {
			repo, ref = rest[:i], rest[i+len(k)+2:]
			if ref != "" && !strings.Contains(ref, "/") {
				return repo, k, ref, true
			}
		}
	}
	return "", "", "", false
}

// find is the descriptor a request names, within the imported images of
// the repository name (registry/path). A manifest by tag is the image's
// target; a manifest by digest, or a blob, must be in the tree of one of
// the repository's imported images, so nothing of another repository or of
// a pulled image is reachable by its digest.
func find(ctx context.Context, is images.Store, cs content.Provider, name, kind, ref string) (ocispec.Descriptor, error) {
	dgst, err := digest.Parse(ref)
	if kind == "blobs" && err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%q is not a digest: %w", ref, errdefs.ErrNotFound)
	}
	if err != nil {
		img, err := is.Get(ctx, name+":"+ref)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if img.Labels[nodeimages.ImportedLabel] == "" {
			return ocispec.Descriptor{}, fmt.Errorf("%s:%s was not imported from a tarball: %w", name, ref, errdefs.ErrNotFound)
		}
		return img.Target, nil
	}
	// Tagged (name:tag) and digest (name@sha256:...) images of the repository.
	list, err := is.List(ctx, `labels."`+nodeimages.ImportedLabel+`"`)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, img := range list {
		if !strings.HasPrefix(img.Name, name+":") && !strings.HasPrefix(img.Name, name+"@") {
			continue
		}
		var found *ocispec.Descriptor
		err := images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if found != nil {
				return nil, images.ErrSkipDesc
			}
			if d.Digest == dgst {
				found = &d
				return nil, images.ErrSkipDesc
			}
			children, err := images.Children(ctx, cs, d)
			if errdefs.IsNotFound(err) {
				// A platform the import skipped.
				return nil, images.ErrSkipDesc
			}
			return children, err
		}), img.Target)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if found != nil {
			if kind == "manifests" && !images.IsManifestType(found.MediaType) && !images.IsIndexType(found.MediaType) {
				return ocispec.Descriptor{}, fmt.Errorf("%s is not a manifest: %w", dgst, errdefs.ErrNotFound)
			}
			return *found, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s@%s is in no imported image: %w", name, dgst, errdefs.ErrNotFound)
}

// distError is the distribution API's error body.
func distError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
