// Package mirror is the node's registry mirror: a read-only OCI distribution
// API on loopback that serves the images the node imported from tarballs
// out of containerd's own content store. containerd's hosts.toml names it
// before every other host, so a pod with imagePullPolicy: Always of an
// imported image starts with no registry reachable (an air-gapped node would
// otherwise fail the pull, though the image is right there), and any other
// image falls through to the next host on the mirror's 404.
//
// Only imported images are served, as their tarballs had them: an image
// pulled with a pod's credentials must not reach a pod without them, and
// imagePullPolicy: Always (the AlwaysPullImages admission plugin) is how a
// cluster makes the registry check those credentials. An imported image is
// already any pod's with imagePullPolicy: IfNotPresent.
package mirror

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
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
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// TokenHeader carries the mirror's token: only containerd, whose hosts.toml
// (0600) holds it, may read through the mirror; any other process on the
// node, or a hostNetwork pod, gets a 401 instead of the node's images.
const TokenHeader = "X-Hakube-Mirror-Token"

// Config is the containerd whose imported images are served.
type Config struct {
	Socket, Namespace string
	// Imported is the target of each image name imported from a tarball.
	Imported func() map[string]ocispec.Descriptor
}

// Mirror is the component.
type Mirror struct {
	cfg   Config
	token string
	ln    net.Listener
	srv   *http.Server

	mu     sync.Mutex
	cl     *ctd.Client
	closed bool
}

// New returns the component.
func New(cfg Config) *Mirror { return &Mirror{cfg: cfg} }

func (m *Mirror) Name() string { return "registry mirror" }

func (m *Mirror) Init(context.Context) error { return nil }

// Start listens on a free loopback port (containerd learns it from Host
// when its hosts.toml files are written, so no fixed port can collide with
// anything) and serves.
func (m *Mirror) Start(context.Context) error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	m.token = hex.EncodeToString(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("registry mirror: %w", err)
	}
	m.ln = ln
	h := &Handler{Namespace: m.cfg.Namespace, Token: m.token, Imported: m.cfg.Imported, Content: m.content}
	m.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("registry mirror: %v", err)
		}
	}()
	return nil
}

// Host is the mirror's URL and the header containerd must send it, for
// hosts.toml; "" before Start.
func (m *Mirror) Host() (url string, header map[string]string) {
	if m.ln == nil {
		return "", nil
	}
	return "http://" + m.ln.Addr().String(), map[string]string{TokenHeader: m.token}
}

// Stop ends the server (a pull in flight gets 5 s) and the containerd client.
func (m *Mirror) Stop() error {
	if m.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if err != nil {
		_ = m.srv.Close()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.cl != nil {
		_ = m.cl.Close()
		m.cl = nil
	}
	return err
}

// content connects to containerd at the first request: containerd starts
// after the mirror, and only containerd asks the mirror for anything. Calls
// wait for the connection (a restarting containerd) rather than fail at once;
// each request bounds its own wait.
func (m *Mirror) content() (content.Provider, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("the registry mirror is stopping")
	}
	if m.cl == nil {
		cl, err := ctd.New(m.cfg.Socket, ctd.WithDefaultNamespace(m.cfg.Namespace), ctd.WithTimeout(5*time.Second),
			ctd.WithCallOpts([]grpc.CallOption{grpc.WaitForReady(true)}))
		if err != nil {
			return nil, err
		}
		m.cl = cl
	}
	return m.cl.ContentStore(), nil
}

// Handler serves the distribution API's read side (the version check,
// manifests and blobs by GET and HEAD) for the imported images, from the
// content store of containerd's namespace. containerd names the registry a
// request is for in the "ns" query parameter (it adds it whenever the host
// is not the registry itself); a request without it is for no image here.
type Handler struct {
	Namespace string
	// Token must come in TokenHeader.
	Token    string
	Imported func() map[string]ocispec.Descriptor
	Content  func() (content.Provider, error)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(TokenHeader)), []byte(h.Token)) != 1 {
		distError(w, http.StatusUnauthorized, "UNAUTHORIZED", "this mirror serves the node's containerd only")
		return
	}
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
	cs, err := h.Content()
	if err != nil {
		distError(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(r.Context(), h.Namespace), 30*time.Second)
	defer cancel()
	desc, err := find(ctx, h.Imported(), cs, ns+"/"+repo, kind, ref)
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
// the repository name (registry/path). A manifest by tag is the imported
// target; a manifest by digest, or a blob, must be in the tree of one of
// the repository's imported images, so nothing of another repository or of
// a pulled image is reachable by its digest.
func find(ctx context.Context, imported map[string]ocispec.Descriptor, cs content.Provider, name, kind, ref string) (ocispec.Descriptor, error) {
	dgst, err := digest.Parse(ref)
	if kind == "blobs" && err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%q is not a digest: %w", ref, errdefs.ErrNotFound)
	}
	if err != nil {
		if target, ok := imported[name+":"+ref]; ok {
			return target, nil
		}
		return ocispec.Descriptor{}, fmt.Errorf("%s:%s was not imported from a tarball: %w", name, ref, errdefs.ErrNotFound)
	}
	for n, target := range imported {
		if !strings.HasPrefix(n, name+":") && !strings.HasPrefix(n, name+"@") {
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
		}), target)
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
