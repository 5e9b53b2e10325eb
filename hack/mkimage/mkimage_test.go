package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, uint32(mode)); err != nil { // raw bits: 0o4755 is setuid
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readTar returns a tarball's members by name, with their contents.
func readTar(t *testing.T, r io.Reader) (map[string]*tar.Header, map[string][]byte, []string) {
	t.Helper()
	hs, data := map[string]*tar.Header{}, map[string][]byte{}
	var order []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs, data, order
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := hs[h.Name]; dup {
			t.Fatalf("%s twice in the tarball", h.Name)
		}
		hs[h.Name], data[h.Name] = h, b
		order = append(order, h.Name)
	}
}

// layout is an OCI layout tarball, decoded.
type layout struct {
	blobs     map[string][]byte
	manifests []descriptor
	order     []string
}

func readLayout(t *testing.T, p string) layout {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, data, order := readTar(t, f)
	var idx struct{ Manifests []descriptor }
	if err := json.Unmarshal(data["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	l := layout{blobs: map[string][]byte{}, manifests: idx.Manifests, order: order}
	for n, b := range data {
		if d, ok := strings.CutPrefix(n, "blobs/sha256/"); ok && d != "" {
			l.blobs["sha256:"+d] = b
			if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != d {
				t.Fatalf("blob %s has digest %x", d, s)
			}
		}
	}
	return l
}

type manifest struct {
	Config descriptor
	Layers []descriptor
}

func (l layout) manifest(t *testing.T, name string) (manifest, map[string]any) {
	t.Helper()
	for _, d := range l.manifests {
		if d.Annotations["io.containerd.image.name"] == name {
			var m manifest
			if err := json.Unmarshal(l.blobs[d.Digest], &m); err != nil {
				t.Fatal(err)
			}
			var c map[string]any
			if err := json.Unmarshal(l.blobs[m.Config.Digest], &c); err != nil {
				t.Fatal(err)
			}
			return m, c
		}
	}
	t.Fatalf("no image %s", name)
	return manifest{}, nil
}

// TestLegacyByteIdentical: the single-image CLI writes exactly what mkimage wrote before -spec existed (the
// digest is of the old binary's output for these inputs), so bin/images/*.tar do not change.
func TestLegacyByteIdentical(t *testing.T) {
	d := t.TempDir()
	write(t, filepath.Join(d, "a"), "hi\n", 0o755)
	write(t, filepath.Join(d, "b"), "cfg\n", 0o600)
	out := filepath.Join(d, "old.tar")
	s := legacySpec("docker.io/hakube/x:1.0", []string{"/a", "-v"}, []string{"pause"},
		[]string{filepath.Join(d, "a") + "=/a", filepath.Join(d, "b") + "=/etc/deep/b"})
	if err := Write(out, s); err != nil {
		t.Fatal(err)
	}
	if got, want := fileSum(t, out), "86cde42a6a3f1a2352580f8e29648441c5d4b2f140a4d0649f000d040ea19006"; got != want {
		t.Fatalf("legacy output sha256 %s, want %s", got, want)
	}
}

// tree makes a root with a symlink, an empty directory, a sticky directory, a setuid file and a hard link.
func tree(t *testing.T, d string) {
	write(t, filepath.Join(d, "bin/busybox"), "ELF", 0o755)
	write(t, filepath.Join(d, "usr/bin/su"), "su", 0o4755)
	write(t, filepath.Join(d, "etc/passwd"), "root:x:0:0::/:/bin/sh\n", 0o644)
	for _, l := range [][2]string{{"busybox", "bin/sh"}, {"/bin/busybox", "usr/bin/wget"}, {"nowhere", "dangling"}} {
		if err := os.Symlink(l[0], filepath.Join(d, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(d, "bin/busybox"), filepath.Join(d, "bin/hard")); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		p string
		m uint32
	}{{"uploads", 0o755}, {"tmp", 0o1777}, {"root", 0o700}} {
		if err := os.Mkdir(filepath.Join(d, x.p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(filepath.Join(d, x.p), x.m); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRootKeepsSymlinksModesAndEmptyDirs(t *testing.T) {
	d := t.TempDir()
	root := filepath.Join(d, "root")
	tree(t, root)
	write(t, filepath.Join(d, "app"), "app", 0o700)
	out := filepath.Join(d, "out.tar")
	s := &Spec{
		Layers: []Layer{{Name: "l", Roots: []string{root}, Files: []string{filepath.Join(d, "app") + "=/opt/app/app"},
			Symlinks: []string{"/app-2=opt/app/app"}, Dirs: []string{"/var/empty=0711"}}},
		Images: []Image{{Name: "example.com/x:1", Layers: []string{"l"}}},
	}
	if err := Write(out, s); err != nil {
		t.Fatal(err)
	}
	l := readLayout(t, out)
	m, _ := l.manifest(t, "example.com/x:1")
	hs, data, order := readTar(t, bytes.NewReader(l.blobs[m.Layers[0].Digest]))
	want := map[string]struct {
		typ  byte
		mode int64
		link string
	}{
		"bin/":         {tar.TypeDir, 0o755, ""},
		"bin/busybox":  {tar.TypeReg, 0o755, ""},
		"bin/hard":     {tar.TypeReg, 0o755, ""},
		"bin/sh":       {tar.TypeSymlink, 0o777, "busybox"},
		"usr/bin/wget": {tar.TypeSymlink, 0o777, "/bin/busybox"},
		"dangling":     {tar.TypeSymlink, 0o777, "nowhere"},
		"usr/bin/su":   {tar.TypeReg, 0o4755, ""},
		"uploads/":     {tar.TypeDir, 0o755, ""},
		"tmp/":         {tar.TypeDir, 0o1777, ""},
		"root/":        {tar.TypeDir, 0o700, ""},
		"etc/passwd":   {tar.TypeReg, 0o644, ""},
		"opt/":         {tar.TypeDir, 0o755, ""},
		"opt/app/":     {tar.TypeDir, 0o755, ""},
		"opt/app/app":  {tar.TypeReg, 0o755, ""},
		"app-2":        {tar.TypeSymlink, 0o777, "opt/app/app"},
		"var/":         {tar.TypeDir, 0o755, ""},
		"var/empty/":   {tar.TypeDir, 0o711, ""},
		"usr/":         {tar.TypeDir, 0o755, ""},
		"usr/bin/":     {tar.TypeDir, 0o755, ""},
		"etc/":         {tar.TypeDir, 0o755, ""},
	}
	if len(hs) != len(want) {
		t.Errorf("members %v, want %d", order, len(want))
	}
	for n, w := range want {
		h := hs[n]
		if h == nil {
			t.Errorf("no %s in %v", n, order)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: type %c mode %o link %q uid %d gid %d mtime %v; want %c %o %q 0 0 epoch",
				n, h.Typeflag, h.Mode, h.Linkname, h.Uid, h.Gid, h.ModTime, w.typ, w.mode, w.link)
		}
	}
	if string(data["bin/hard"]) != "ELF" || string(data["opt/app/app"]) != "app" {
		t.Errorf("contents: hard %q app %q", data["bin/hard"], data["opt/app/app"])
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("members not sorted: %s before %s", order[i-1], order[i])
		}
	}
}

func TestDeterministic(t *testing.T) {
	var sums []string
	for i := range 2 {
		d := t.TempDir()
		tree(t, filepath.Join(d, "root"))
		if i == 1 { // other mtimes, same contents
			old := time.Now().Add(-48 * time.Hour)
			filepath.Walk(filepath.Join(d, "root"), func(p string, _ os.FileInfo, _ error) error {
				os.Lchown(p, 1000, 1000)
				return os.Chtimes(p, old, old)
			})
		}
		s := &Spec{Layers: []Layer{{Name: "base", Roots: []string{filepath.Join(d, "root")}}},
			Images: []Image{{Name: "a:1", Layers: []string{"base"}, Cmd: []string{"sh"}}, {Name: "b:1", Layers: []string{"base"}}}}
		out := filepath.Join(d, "out.tar")
		if err := Write(out, s); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fileSum(t, out))
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds differ: %s %s", sums[0], sums[1])
	}
}

// TestSharedLayers: images with the same bottom layers have the same layer digests, each blob is in the
// tarball once, and each image has its own config and name.
func TestSharedLayers(t *testing.T) {
	d := t.TempDir()
	tree(t, filepath.Join(d, "base"))
	write(t, filepath.Join(d, "v1"), "one", 0o755)
	write(t, filepath.Join(d, "v2"), "two", 0o755)
	write(t, filepath.Join(d, "html/data.json"), `{"image":"kitten.jpg"}`, 0o644)
	s := &Spec{
		Layers: []Layer{
			{Name: "base", Roots: []string{filepath.Join(d, "base")}},
			{Name: "files", Symlinks: []string{"/agnhost-2=agnhost"}, Dirs: []string{"/uploads"}},
			{Name: "v1", Files: []string{filepath.Join(d, "v1") + "=/agnhost"}},
			{Name: "v2", Files: []string{filepath.Join(d, "v2") + "=/agnhost"}},
			{Name: "html", Roots: []string{filepath.Join(d, "html")}},
			{Name: "unused", Roots: []string{filepath.Join(d, "does-not-exist")}},
		},
		Images: []Image{
			{Name: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", Layers: []string{"base", "files", "v1"},
				Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, ExposedPorts: []string{"80/tcp"}},
			{Name: "registry.k8s.io/e2e-test-images/agnhost:2.55", Layers: []string{"base", "files", "v2"},
				Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}},
			{Name: "registry.k8s.io/e2e-test-images/kitten:1.8", Layers: []string{"base", "files", "v1", "html"},
				Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}, Env: []string{"PATH=/bin", "X=1"},
				WorkingDir: "/", User: "1000:50000"},
		},
	}
	out := filepath.Join(d, "out.tar")
	if err := Write(out, s); err != nil {
		t.Fatal(err)
	}
	l := readLayout(t, out)
	if len(l.manifests) != 3 {
		t.Fatalf("%d manifests", len(l.manifests))
	}
	a, ac := l.manifest(t, "registry.k8s.io/e2e-test-images/agnhost:2.66.1")
	b, _ := l.manifest(t, "registry.k8s.io/e2e-test-images/agnhost:2.55")
	k, kc := l.manifest(t, "registry.k8s.io/e2e-test-images/kitten:1.8")
	if a.Layers[0].Digest != b.Layers[0].Digest || a.Layers[1].Digest != b.Layers[1].Digest || a.Layers[2].Digest == b.Layers[2].Digest {
		t.Errorf("agnhost layers %v vs %v: want the first two shared, the third not", a.Layers, b.Layers)
	}
	if len(k.Layers) != 4 || k.Layers[2].Digest != a.Layers[2].Digest {
		t.Errorf("kitten layers %v: want agnhost:2.66.1's three and one more", k.Layers)
	}
	// 5 distinct layers, 3 configs, 3 manifests.
	if n := len(l.blobs); n != 11 {
		t.Errorf("%d blobs, want 11", n)
	}
	if m := l.manifests[2]; m.Annotations["org.opencontainers.image.ref.name"] != "1.8" || m.Platform["os"] != "linux" {
		t.Errorf("kitten descriptor %+v", m)
	}
	cfg := func(c map[string]any) string { b, _ := json.Marshal(c["config"]); return string(b) }
	if got, want := cfg(ac), `{"Cmd":["pause"],"Entrypoint":["/agnhost"],"Env":["`+defaultPath+`"],"ExposedPorts":{"80/tcp":{}}}`; got != want {
		t.Errorf("agnhost config %s, want %s", got, want)
	}
	if got, want := cfg(kc), `{"Cmd":["test-webserver"],"Entrypoint":["/agnhost"],"Env":["PATH=/bin","X=1"],"User":"1000:50000","WorkingDir":"/"}`; got != want {
		t.Errorf("kitten config %s, want %s", got, want)
	}
	if ids := kc["rootfs"].(map[string]any)["diff_ids"].([]any); len(ids) != 4 || ids[0] != a.Layers[0].Digest {
		t.Errorf("kitten diff_ids %v", ids)
	}
	if h := kc["history"].([]any); len(h) != 4 {
		t.Errorf("kitten history %v: want one entry per layer", h)
	}
}

func TestSpecErrors(t *testing.T) {
	for _, s := range []string{
		`{"images": []}`,
		`{"layers": [{"name": "a"}], "images": [{"name": "x:1", "layers": ["b"]}]}`,
		`{"layers": [{"name": "a"}, {"name": "a"}], "images": [{"name": "x:1", "layers": ["a"]}]}`,
		`{"layers": [{"name": "a", "root": "x"}], "images": [{"name": "x:1", "layers": ["a"]}]}`,
		`{"layers": [{"name": "a"}], "images": [{"name": "x:1", "layers": ["a"], "exposedPorts": ["80"]}]}`,
		`{"layers": [{"name": "a"}], "images": [{"name": "x:1", "layers": ["a"]}, {"name": "x:1", "layers": ["a"]}]}`,
	} {
		if _, err := ParseSpec([]byte(s)); err == nil {
			t.Errorf("ParseSpec(%s) accepted", s)
		}
	}
	d := t.TempDir()
	write(t, filepath.Join(d, "f"), "x", 0o644)
	for _, l := range []Layer{
		{Name: "l", Files: []string{filepath.Join(d, "f") + "=/a", filepath.Join(d, "f") + "=/a/b"}},
		{Name: "l", Dirs: []string{"/x=999"}},
		{Name: "l", Symlinks: []string{"/x"}},
	} {
		if err := Write(filepath.Join(d, "o.tar"), &Spec{Layers: []Layer{l}, Images: []Image{{Name: "x:1", Layers: []string{"l"}}}}); err == nil {
			t.Errorf("layer %+v accepted", l)
		}
	}
}

// TestLegacyDirectoryPair: in the single-image CLI, a HOST ending in / is a directory copied whole.
func TestLegacyDirectoryPair(t *testing.T) {
	d := t.TempDir()
	tree(t, filepath.Join(d, "root"))
	out := filepath.Join(d, "out.tar")
	if err := Write(out, legacySpec("example.com/bb:1", nil, []string{"sh"}, []string{filepath.Join(d, "root") + "/=/"})); err != nil {
		t.Fatal(err)
	}
	l := readLayout(t, out)
	m, _ := l.manifest(t, "example.com/bb:1")
	hs, _, _ := readTar(t, bytes.NewReader(l.blobs[m.Layers[0].Digest]))
	if h := hs["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh: %+v", h)
	}
	if h := hs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", h)
	}
}
