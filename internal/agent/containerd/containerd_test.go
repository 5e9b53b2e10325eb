package containerd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/hakube/hakube/internal/layout"
)

// TestConfig: the generated configuration is TOML containerd reads, with
// the node's paths and, only where the capability is missing, restricted
// OOM scores.
func TestConfig(t *testing.T) {
	l := layout.New("/var/lib/hakube")
	c := New(Config{Layout: l, BinDir: "/opt/hakube/bin", PauseImage: "docker.io/hakube/pause:3.10"})
	for _, restrict := range []bool{true, false} {
		var v struct {
			Version int
			Root    string
			State   string
			GRPC    struct{ Address string } `toml:"grpc"`
			Plugins map[string]map[string]any
		}
		if err := toml.Unmarshal([]byte(c.config(restrict)), &v); err != nil {
			t.Fatal(err)
		}
		rt := v.Plugins["io.containerd.cri.v1.runtime"]
		runc := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)["options"].(map[string]any)
		img := v.Plugins["io.containerd.cri.v1.images"]
		switch {
		case v.Version != 3 || v.Root != l.Containerd() || v.State != l.ContainerdState() || v.GRPC.Address != l.ContainerdSocket():
			t.Errorf("version %d, root %q, state %q, socket %q", v.Version, v.Root, v.State, v.GRPC.Address)
		case v.Plugins["io.containerd.nri.v1.nri"]["disable"] != true:
			t.Error("NRI is on: its socket would be the machine's")
		case rt["restrict_oom_score_adj"] != restrict:
			t.Errorf("restrict_oom_score_adj %v, want %v", rt["restrict_oom_score_adj"], restrict)
		case runc["BinaryName"] != "/opt/hakube/bin/runc" || runc["SystemdCgroup"] != false:
			t.Errorf("runc options %v", runc)
		case img["pinned_images"].(map[string]any)["sandbox"] != "docker.io/hakube/pause:3.10":
			t.Errorf("pinned images %v", img["pinned_images"])
		case img["registry"].(map[string]any)["config_path"] != l.ContainerdHosts():
			t.Errorf("registry %v", img["registry"])
		case rt["cni"].(map[string]any)["conf_dir"] != l.CNIConf():
			t.Errorf("cni %v", rt["cni"])
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	c := Config{Layout: layout.New(dir), BinDir: dir}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "runc is missing") || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("no runc: %v", err)
	}
	for _, f := range []string{"runc", Shim, "cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap"} {
		p := filepath.Join(dir, f)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Layout = layout.New("/" + strings.Repeat("d", 100))
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("a socket path too long: %v", err)
	}
}
