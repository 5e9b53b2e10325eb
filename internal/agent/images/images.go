// Package images imports the node's images from tarballs, as no registry may
// be reachable: those shipped beside hakube (the pause and CoreDNS images)
// and those the user puts in <data-dir>/agent/images. Each is pinned, so the
// kubelet's image garbage collection never deletes it.
package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	ctd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/klog/v2"
)

// PinnedLabel is the CRI's mark of an image the kubelet must not collect.
const PinnedLabel = "io.cri-containerd.pinned"

// Suffixes are the tarballs imported: OCI layout or docker-archive, plain,
// gzip or zstd.
var Suffixes = []string{".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd"}

// Config is what to import, and where.
type Config struct {
	// Dirs are searched for tarballs, in order.
	Dirs []string
	// Socket is containerd's.
	Socket    string
	Namespace string
	// Snapshotter unpacks the images, so the first pod starts without waiting.
	Snapshotter string
}

// Importer is the component.
type Importer struct {
	cfg Config

	mu       sync.Mutex
	imported map[string]ocispec.Descriptor
	stop     context.CancelFunc
	stopped  chan struct{}
}

// New returns the component.
func New(cfg Config) *Importer { return &Importer{cfg: cfg} }

func (i *Importer) Name() string { return "images" }

func (i *Importer) Init(context.Context) error { return nil }

// Stop ends the pinning loop.
func (i *Importer) Stop() error {
	if i.stop != nil {
		i.stop()
		<-i.stopped
	}
	return nil
}

// Imported is the target of each image name this start imported, as it was
// in its tarball: the node's registry mirror serves these and nothing else.
// It is kept here, not in a label, because a pull of the same name rewrites
// the image's record (the transfer service drops every label) and may point
// the name at an image pulled with a pod's credentials.
func (i *Importer) Imported() map[string]ocispec.Descriptor {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.imported
}

// Start imports every tarball; one that fails is named and ends the start:
// a pod would otherwise wait for an image that will never come.
func (i *Importer) Start(ctx context.Context) error {
	files, err := Tarballs(i.cfg.Dirs)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return nil
	}
	start := time.Now()
	cl, err := ctd.New(i.cfg.Socket, ctd.WithDefaultNamespace(i.cfg.Namespace))
	if err != nil {
		return err
	}
	var names []string
	imported := map[string]ocispec.Descriptor{}
	for _, f := range files {
		imgs, err := importFile(ctx, cl, f, i.cfg.Snapshotter)
		if err != nil {
			cl.Close()
			return fmt.Errorf("importing %s: %w (an OCI layout or docker-archive tarball, plain, gzip or zstd, is expected)", f, err)
		}
		for _, img := range imgs {
			names = append(names, img.Name)
			imported[img.Name] = img.Target
		}
	}
	i.mu.Lock()
	i.imported = imported
	i.mu.Unlock()
	klog.Infof("node: %d images imported from %d tarballs in %s (%s): %s", len(names), len(files), strings.Join(i.cfg.Dirs, ", "),
		time.Since(start).Round(time.Millisecond), strings.Join(names, ", "))
	loopCtx, cancel := context.WithCancel(context.Background())
	i.stop, i.stopped = cancel, make(chan struct{})
	go func() {
		defer close(i.stopped)
		defer cl.Close()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-time.After(pinEvery):
			}
			if err := repin(loopCtx, cl.ImageService(), imported); err != nil && loopCtx.Err() == nil {
				klog.Warningf("node: pinning the imported images again: %v", err)
			}
		}
	}()
	return nil
}

// pinEvery is how often imported images are pinned again: well within the
// kubelet's 5 min image garbage collection period.
const pinEvery = 30 * time.Second

// repin pins again each imported image that still has its imported target.
// A pull of an imported name (imagePullPolicy: Always, through the node's
// registry mirror) rewrites the image's record without the pin, and the
// kubelet would then be free to delete an image no registry can give back.
func repin(ctx context.Context, is images.Store, imported map[string]ocispec.Descriptor) error {
	for name, target := range imported {
		img, err := is.Get(ctx, name)
		if errdefs.IsNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		if img.Target.Digest != target.Digest || img.Labels[PinnedLabel] == "pinned" {
			continue
		}
		if img.Labels == nil {
			img.Labels = map[string]string{}
		}
		img.Labels[PinnedLabel] = "pinned"
		if _, err := is.Update(ctx, img, "labels."+PinnedLabel); err != nil {
			return err
		}
		klog.Infof("node: pinned %s again (a pull had dropped its pin)", name)
	}
	return nil
}

// Tarballs lists the image tarballs in dirs (a missing dir has none).
func Tarballs(dirs []string) ([]string, error) {
	var out []string
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var here []string
		for _, e := range entries {
			if e.Type().IsRegular() && hasSuffix(e.Name()) {
				here = append(here, filepath.Join(d, e.Name()))
			}
		}
		sort.Strings(here)
		out = append(out, here...)
	}
	return out, nil
}

func hasSuffix(name string) bool {
	for _, s := range Suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

func importFile(ctx context.Context, cl *ctd.Client, path, snapshotter string) ([]images.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := compression.DecompressStream(f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	imgs, err := cl.Import(ctx, r, ctd.WithImportPlatform(platforms.Default()), ctd.WithSkipMissing())
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("no image in it")
	}
	for _, img := range imgs {
		if img.Labels == nil {
			img.Labels = map[string]string{}
		}
		img.Labels[PinnedLabel] = "pinned"
		if _, err := cl.ImageService().Update(ctx, img, "labels."+PinnedLabel); err != nil {
			return nil, err
		}
		if err := ctd.NewImageWithPlatform(cl, img, platforms.Default()).Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", img.Name, err)
		}
	}
	return imgs, nil
}
