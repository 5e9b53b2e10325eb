package server

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"path/filepath"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/kubeconfig"
)

// CoreDNSImage is the cluster DNS image hakube builds and ships beside the
// binary (bin/images/coredns.tar).
const CoreDNSImage = "docker.io/hakube/coredns:1.15.0"

//go:embed builtin/*.yaml
var builtin embed.FS

// writeBuiltinManifests writes the cluster add-ons every server applies
// (hakube-*.yaml in the manifests directory), as K3s does: the pod network's
// RBAC and CoreDNS. They are written at every start, so an upgrade updates
// them; a user's edits there are lost.
func writeBuiltinManifests(dir string, cfg Config) error {
	entries, err := builtin.ReadDir("builtin")
	if err != nil {
		return err
	}
	values := map[string]string{"ClusterDNS": cfg.ClusterDNS, "ClusterDomain": cfg.ClusterDomain, "Image": CoreDNSImage}
	for _, e := range entries {
		t, err := template.ParseFS(builtin, "builtin/"+e.Name())
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := t.Option("missingkey=error").Execute(&b, values); err != nil {
			return err
		}
		if err := fsutil.WriteFile(filepath.Join(dir, "hakube-"+e.Name()), b.Bytes(), 0o600); err != nil {
			return fmt.Errorf("built-in manifest %s: %w", e.Name(), err)
		}
	}
	return nil
}

// controlPlaneLabel marks a server's node as the control plane's once it
// has registered: the kubelet may not set node-role labels on itself
// (NodeRestriction), so the server does, with its own credentials.
type controlPlaneLabel struct {
	node, kubeconfig string
	cancel           context.CancelFunc
}

// ControlPlaneLabel is the label of a server's node.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

func (c *controlPlaneLabel) Name() string               { return "control-plane label" }
func (c *controlPlaneLabel) Init(context.Context) error { return nil }

func (c *controlPlaneLabel) Start(context.Context) error {
	cs, err := kubeconfig.Client(c.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	patch := []byte(`{"metadata":{"labels":{"` + ControlPlaneLabel + `":"true"}}}`)
	go func() {
		for {
			_, err := cs.CoreV1().Nodes().Patch(ctx, c.node, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "hakube"})
			if err == nil {
				return
			}
			klog.V(2).Infof("labelling node %s: %v", c.node, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}

func (c *controlPlaneLabel) Stop() error {
	if c.cancel != nil {
		c.cancel()
	}
	return nil
}
