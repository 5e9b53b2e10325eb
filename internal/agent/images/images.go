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
	"time"

	ctd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/platforms"
	"k8s.io/klog/v2"
)

// PinnedLabel is the CRI's mark of an image the kubelet must not collect.
const PinnedLabel = "io.cri-containerd.pinned"

// ImportedLabel marks an image imported from a tarball; its value is the
// tarball's file name. The node's registry mirror serves only these.
const ImportedLabel = "io.hakube.imported"

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
type Importer struct{ cfg Config }

// New returns the component.
func New(cfg Config) *Importer { return &Importer{cfg: cfg} }

func (i *Importer) Name() string { return "images" }

func (i *Importer) Init(context.Context) error { return nil }

func (i *Importer) Stop() error { return nil }

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
	defer cl.Close()
	var names []string
	for _, f := range files {
		n, err := importFile(ctx, cl, f, i.cfg.Snapshotter)
		if err != nil {
			return fmt.Errorf("importing %s: %w (an OCI layout or docker-archive tarball, plain, gzip or zstd, is expected)", f, err)
		}
		names = append(names, n...)
	}
	klog.Infof("node: %d images imported from %d tarballs in %s (%s): %s", len(names), len(files), strings.Join(i.cfg.Dirs, ", "),
		time.Since(start).Round(time.Millisecond), strings.Join(names, ", "))
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

func importFile(ctx context.Context, cl *ctd.Client, path, snapshotter string) ([]string, error) {
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
	var names []string
	for _, img := range imgs {
		if img.Labels == nil {
			img.Labels = map[string]string{}
		}
		img.Labels[PinnedLabel] = "pinned"
		img.Labels[ImportedLabel] = filepath.Base(path)
		if _, err := cl.ImageService().Update(ctx, img, "labels."+PinnedLabel, "labels."+ImportedLabel); err != nil {
			return nil, err
		}
		if err := ctd.NewImageWithPlatform(cl, img, platforms.Default()).Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", img.Name, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}
