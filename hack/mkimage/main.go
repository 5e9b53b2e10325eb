// Command mkimage writes OCI image layouts as tarballs that `ctr images import`
// and the CRI accept. The output is deterministic: every entry has a fixed
// mtime and root ownership, so a rebuild is byte-identical.
//
// One image with one layer, from HOST=PATH pairs (a HOST ending in / is a
// directory copied whole, keeping symlinks, modes and empty directories):
//
//	mkimage -o out.tar -name docker.io/hakube/pause:3.10 -entrypoint /pause HOST=PATH...
//
// Several images of several layers each, in one layout, from a JSON spec (see
// Spec): a layer used by several images is written, and stored, once.
//
//	mkimage -o out.tar -spec images.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	out := flag.String("o", "", "output tarball")
	specFile := flag.String("spec", "", "JSON spec of several images and layers (instead of -name and HOST=PATH)")
	name := flag.String("name", "", "image name, e.g. docker.io/hakube/pause:3.10")
	var entrypoint, cmd list
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable)")
	flag.Var(&cmd, "cmd", "cmd argument (repeatable)")
	flag.Parse()
	var spec *Spec
	switch {
	case *out != "" && *specFile != "" && *name == "" && flag.NArg() == 0:
		b, err := os.ReadFile(*specFile)
		if err == nil {
			spec, err = ParseSpec(b)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
			os.Exit(1)
		}
	case *out != "" && *specFile == "" && *name != "" && flag.NArg() > 0:
		spec = legacySpec(*name, entrypoint, cmd, flag.Args())
	default:
		fmt.Fprintln(os.Stderr, "usage: mkimage -o OUT.tar -name NAME [-entrypoint ARG]... [-cmd ARG]... HOST=PATH...\n"+
			"       mkimage -o OUT.tar -spec SPEC.json")
		os.Exit(2)
	}
	if err := Write(*out, spec); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// legacySpec is the single-image CLI as a spec: one layer with /tmp (1777) and the pairs.
func legacySpec(name string, entrypoint, cmd, pairs []string) *Spec {
	l := Layer{Name: "layer", Dirs: []string{"/tmp=1777"}}
	for _, p := range pairs {
		if host, dst, ok := strings.Cut(p, "="); ok && strings.HasSuffix(host, "/") {
			l.Roots = append(l.Roots, host+"="+dst)
		} else {
			l.Files = append(l.Files, p)
		}
	}
	return &Spec{Layers: []Layer{l}, Images: []Image{{Name: name, Layers: []string{"layer"}, Entrypoint: entrypoint, Cmd: cmd}}}
}

// Spec lists the layers, by name, and the images made of them, in the order
// they appear in index.json.
//
//	{"layers": [{"name": "base", "roots": ["rootfs"]},
//	            {"name": "app", "files": ["bin/app=/app"], "symlinks": ["/app-2=app"], "dirs": ["/uploads"]}],
//	 "images": [{"name": "example.com/app:1.0", "layers": ["base", "app"],
//	             "entrypoint": ["/app"], "cmd": ["serve"], "env": ["PATH=/bin"], "workingDir": "/",
//	             "user": "1000", "exposedPorts": ["80/tcp"]}]}
type Spec struct {
	Layers []Layer `json:"layers"`
	Images []Image `json:"images"`
}

// Layer is one tar layer. Its sources are applied in this order, a later one
// replacing an earlier one at the same path: Roots, Files, Symlinks, Dirs. A
// missing parent directory is added with mode 0755.
type Layer struct {
	Name string `json:"name"`
	// Roots are DIR or DIR=PATH (PATH defaults to /): the tree under DIR,
	// kept as it is (symlinks, permission bits with setuid/setgid/sticky, empty
	// directories); a hard link becomes a copy. Other file types are refused.
	Roots []string `json:"roots,omitempty"`
	// Files are HOST=PATH: the file's bytes (symlinks followed), mode 0755 when
	// the host file has any execute bit, else 0644.
	Files []string `json:"files,omitempty"`
	// Symlinks are PATH=TARGET.
	Symlinks []string `json:"symlinks,omitempty"`
	// Dirs are PATH or PATH=MODE (octal, default 0755).
	Dirs []string `json:"dirs,omitempty"`
}

// Image is one manifest of the index: its layers, bottom first, and its config.
type Image struct {
	// Name is the full reference, e.g. registry.k8s.io/pause:3.10.2.
	Name       string   `json:"name"`
	Layers     []string `json:"layers"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	// Env defaults to a standard PATH.
	Env          []string `json:"env,omitempty"`
	WorkingDir   string   `json:"workingDir,omitempty"`
	User         string   `json:"user,omitempty"`
	ExposedPorts []string `json:"exposedPorts,omitempty"`
}

// ParseSpec decodes and checks a spec; unknown fields are errors.
func ParseSpec(b []byte) (*Spec, error) {
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	return &s, s.check()
}

func (s *Spec) check() error {
	if len(s.Images) == 0 {
		return fmt.Errorf("spec: no images")
	}
	layers := map[string]bool{}
	for _, l := range s.Layers {
		if l.Name == "" || layers[l.Name] {
			return fmt.Errorf("spec: layer name %q empty or repeated", l.Name)
		}
		layers[l.Name] = true
	}
	names := map[string]bool{}
	for _, im := range s.Images {
		if im.Name == "" || names[im.Name] {
			return fmt.Errorf("spec: image name %q empty or repeated", im.Name)
		}
		names[im.Name] = true
		if len(im.Layers) == 0 {
			return fmt.Errorf("spec: image %s has no layers", im.Name)
		}
		for _, l := range im.Layers {
			if !layers[l] {
				return fmt.Errorf("spec: image %s: no layer %q", im.Name, l)
			}
		}
		for _, p := range im.ExposedPorts {
			if _, proto, ok := strings.Cut(p, "/"); !ok || (proto != "tcp" && proto != "udp" && proto != "sctp") {
				return fmt.Errorf("spec: image %s: exposed port %q: want PORT/tcp|udp|sctp", im.Name, p)
			}
		}
	}
	return nil
}
