// Package manifests applies the Kubernetes manifests found in a directory to
// the cluster, as K3s does with server/manifests: every file at start, and
// each file again whenever its content changes. Objects are applied
// server-side with field manager "hakube", so edits made to other fields of
// the objects survive; removing a file leaves its objects in place.
package manifests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// DefaultInterval is how often the directory is looked at; a changed file is
// applied within it.
const DefaultInterval = 5 * time.Second

// Config configures the deployer.
type Config struct {
	Dir string
	// Kubeconfig reaches the apiserver with the rights to apply anything.
	Kubeconfig string
	Interval   time.Duration
}

// Deployer is the component that applies the manifests.
type Deployer struct {
	cfg    Config
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New returns the deployer.
func New(cfg Config) *Deployer {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	return &Deployer{cfg: cfg}
}

// Name implements component.Component.
func (d *Deployer) Name() string { return "manifests in " + d.cfg.Dir }

// Init implements component.Component.
func (d *Deployer) Init(context.Context) error { return nil }

// Start creates the directory and applies its manifests in the background:
// a manifest may wait for a type another one defines.
func (d *Deployer) Start(context.Context) error {
	if err := os.MkdirAll(d.cfg.Dir, 0o700); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", d.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	a := &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)),
		applied: map[string][sha256.Size]byte{}, failed: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.done.Add(1)
	go func() {
		defer d.done.Done()
		for {
			a.scan(ctx, d.cfg.Dir)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d.cfg.Interval):
			}
		}
	}()
	return nil
}

// Stop ends the scans.
func (d *Deployer) Stop() error {
	if d.cancel != nil {
		d.cancel()
		d.done.Wait()
	}
	return nil
}

type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// rediscovered: the mapper was reset in this scan already.
	rediscovered bool
	// applied holds each file's content as last applied in full; failed the
	// last error of a file, logged once until it changes.
	applied map[string][sha256.Size]byte
	failed  map[string]string
}

func (a *applier) scan(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		klog.Errorf("manifests: %v", err)
		return
	}
	a.rediscovered = false
	// A file removed and written again is applied again.
	for path := range a.applied {
		if !slices.ContainsFunc(entries, func(e os.DirEntry) bool { return filepath.Join(dir, e.Name()) == path }) {
			delete(a.applied, path)
		}
	}
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if e.IsDir() || strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			a.fail(path, err)
			continue
		}
		sum := sha256.Sum256(b)
		if a.applied[path] == sum {
			continue
		}
		n, err := a.apply(ctx, b)
		if err != nil {
			if ctx.Err() == nil {
				a.fail(path, err)
			}
			continue
		}
		a.applied[path] = sum
		delete(a.failed, path)
		klog.Infof("manifests: applied %s (%d objects)", path, n)
	}
}

func (a *applier) fail(path string, err error) {
	if msg := err.Error(); a.failed[path] != msg {
		a.failed[path] = msg
		klog.Errorf("manifests: %s: %v (retrying every few seconds)", path, err)
	}
}

// apply applies every object of a YAML or JSON stream.
func (a *applier) apply(ctx context.Context, data []byte) (int, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	n := 0
	for i := 1; ; i++ {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		objs := []unstructured.Unstructured{obj}
		if obj.IsList() {
			list, err := obj.ToList()
			if err != nil {
				return n, fmt.Errorf("document %d: %w", i, err)
			}
			objs = list.Items
		}
		for _, o := range objs {
			if err := a.applyOne(ctx, &o); err != nil {
				return n, fmt.Errorf("document %d (%s %s): %w", i, o.GetKind(), o.GetName(), err)
			}
			n++
		}
	}
}

func (a *applier) applyOne(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || obj.GetName() == "" {
		return errors.New("an object needs apiVersion, kind and metadata.name")
	}
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) && !a.rediscovered {
		// A type another manifest defines may have been added since; one
		// discovery per scan is enough to see it.
		a.mapper.Reset()
		a.rediscovered = true
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var res dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		res = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	_, err = res.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "hakube", Force: true})
	return err
}
