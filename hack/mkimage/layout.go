package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    map[string]string `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

var epoch = time.Unix(0, 0).UTC()

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// blob is a layer in a temporary file, or a JSON document in memory.
type blob struct {
	file   string
	data   []byte
	digest string
	size   int64
}

// Write writes the spec's images as one OCI layout tarball at out (through
// out.tmp, so that a failed run leaves no target that make takes as up to date).
func Write(out string, s *Spec) error {
	if err := s.check(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	layers := map[string]*blob{}
	for i, l := range s.Layers {
		used := false
		for _, im := range s.Images {
			for _, n := range im.Layers {
				used = used || n == l.Name
			}
		}
		if !used {
			continue
		}
		b, err := writeLayer(filepath.Join(tmp, strconv.Itoa(i)), l)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Name, err)
		}
		layers[l.Name] = b
	}

	var blobs []*blob // in order of first use: each image's layers, config, manifest
	seen := map[string]bool{}
	keep := func(b *blob) {
		if !seen[b.digest] {
			seen[b.digest] = true
			blobs = append(blobs, b)
		}
	}
	var manifests []descriptor
	for _, im := range s.Images {
		var diffIDs []string
		var ldescs []descriptor
		var history []map[string]string
		for _, n := range im.Layers {
			b := layers[n]
			keep(b)
			diffIDs = append(diffIDs, b.digest)
			ldescs = append(ldescs, descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: b.digest, Size: b.size})
			h := map[string]string{"created": epoch.Format(time.RFC3339), "created_by": "hakube mkimage"}
			if len(im.Layers) > 1 {
				h["comment"] = n
			}
			history = append(history, h)
		}
		config, _ := json.Marshal(map[string]any{
			"created":      epoch.Format(time.RFC3339),
			"architecture": "amd64",
			"os":           "linux",
			"config":       imageConfig(im),
			"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
			"history":      history,
		})
		cb := jsonBlob(config)
		manifest, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.manifest.v1+json",
			"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cb.digest, Size: cb.size},
			"layers":        ldescs,
		})
		mb := jsonBlob(manifest)
		keep(cb)
		keep(mb)
		m := descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: mb.digest, Size: mb.size}
		m.Platform = map[string]string{"architecture": "amd64", "os": "linux"}
		m.Annotations = map[string]string{"io.containerd.image.name": im.Name, "org.opencontainers.image.ref.name": refTag(im.Name)}
		manifests = append(manifests, m)
	}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     manifests,
	})

	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, data []byte, mode int64) error {
		return writeEntry(tw, entry{name: name, typ: tar.TypeReg, mode: mode, data: data, size: int64(len(data))})
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return err
	}
	if err := add("index.json", index, 0o644); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := writeEntry(tw, entry{name: d, typ: tar.TypeDir, mode: 0o755}); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		e := entry{name: "blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:"), typ: tar.TypeReg, mode: 0o644,
			data: b.data, host: b.file, size: b.size}
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

func imageConfig(im Image) map[string]any {
	c := map[string]any{"Env": []string{defaultPath}}
	if len(im.Env) > 0 {
		c["Env"] = im.Env
	}
	if len(im.Entrypoint) > 0 {
		c["Entrypoint"] = im.Entrypoint
	}
	if len(im.Cmd) > 0 {
		c["Cmd"] = im.Cmd
	}
	if im.WorkingDir != "" {
		c["WorkingDir"] = im.WorkingDir
	}
	if im.User != "" {
		c["User"] = im.User
	}
	if len(im.ExposedPorts) > 0 {
		ports := map[string]struct{}{}
		for _, p := range im.ExposedPorts {
			ports[p] = struct{}{}
		}
		c["ExposedPorts"] = ports
	}
	return c
}

// refTag is the org.opencontainers.image.ref.name of a name: its tag, or latest.
func refTag(name string) string {
	tag := name[strings.LastIndex(name, ":")+1:]
	if strings.Contains(tag, "/") || !strings.Contains(name, ":") {
		tag = "latest"
	}
	return tag
}

func jsonBlob(b []byte) *blob { return &blob{data: b, digest: digest(b), size: int64(len(b))} }

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// entry is one member of a layer: a directory (name ends in /), a regular
// file (data, or the bytes of host), or a symlink.
type entry struct {
	name string
	typ  byte
	mode int64
	data []byte
	host string
	size int64
	link string
}

// writeEntry writes e owned by root with the fixed mtime.
func writeEntry(tw *tar.Writer, e entry) error {
	h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: epoch, Typeflag: e.typ, Uname: "root", Gname: "root", Linkname: e.link}
	if e.typ == tar.TypeReg {
		h.Size = e.size
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if e.typ != tar.TypeReg {
		return nil
	}
	if e.host == "" {
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.host)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(tw, f)
	if err == nil && n != e.size {
		err = fmt.Errorf("%s changed size while being written", e.host)
	}
	return err
}

// clean turns an image path into a layer member name without the leading /;
// "" is the root.
func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// layerEntries lists a layer's members, sorted by name (a directory's name ends
// in /, so it precedes its contents).
func layerEntries(l Layer) ([]entry, error) {
	m := map[string]entry{}
	put := func(e entry) {
		// A path is one member, whatever its type: drop the other spelling.
		delete(m, strings.TrimSuffix(e.name, "/"))
		delete(m, strings.TrimSuffix(e.name, "/")+"/")
		m[e.name] = e
	}
	for _, r := range l.Roots {
		dir, dst, ok := strings.Cut(r, "=")
		if !ok {
			dst = "/"
		}
		dst = clean(dst)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			name := clean(path.Join(dst, filepath.ToSlash(rel)))
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode := int64(info.Mode().Perm())
			if info.Mode()&fs.ModeSetuid != 0 {
				mode |= 0o4000
			}
			if info.Mode()&fs.ModeSetgid != 0 {
				mode |= 0o2000
			}
			if info.Mode()&fs.ModeSticky != 0 {
				mode |= 0o1000
			}
			switch {
			case info.Mode().IsDir():
				if name != "" {
					put(entry{name: name + "/", typ: tar.TypeDir, mode: mode})
				}
			case info.Mode().IsRegular():
				put(entry{name: name, typ: tar.TypeReg, mode: mode, host: p, size: info.Size()})
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				put(entry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target})
			default:
				return fmt.Errorf("%s: unsupported file type %s", p, info.Mode().Type())
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, p := range l.Files {
		host, dst, ok := strings.Cut(p, "=")
		dst = clean(dst)
		if !ok || dst == "" {
			return nil, fmt.Errorf("bad pair %q: want HOST=PATH", p)
		}
		st, err := os.Stat(host)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", host)
		}
		mode := int64(0o644)
		if st.Mode()&0o111 != 0 {
			mode = 0o755
		}
		put(entry{name: dst, typ: tar.TypeReg, mode: mode, host: host, size: st.Size()})
	}
	for _, p := range l.Symlinks {
		dst, target, ok := strings.Cut(p, "=")
		dst = clean(dst)
		if !ok || dst == "" || target == "" {
			return nil, fmt.Errorf("bad symlink %q: want PATH=TARGET", p)
		}
		put(entry{name: dst, typ: tar.TypeSymlink, mode: 0o777, link: target})
	}
	for _, p := range l.Dirs {
		dst, ms, ok := strings.Cut(p, "=")
		mode := int64(0o755)
		if ok {
			v, err := strconv.ParseInt(ms, 8, 32)
			if err != nil || v&^0o7777 != 0 {
				return nil, fmt.Errorf("bad dir %q: want PATH=OCTAL-MODE", p)
			}
			mode = v
		}
		dst = clean(dst)
		if dst == "" {
			return nil, fmt.Errorf("bad dir %q", p)
		}
		put(entry{name: dst + "/", typ: tar.TypeDir, mode: mode})
	}
	for n := range m {
		for d := path.Dir(strings.TrimSuffix(n, "/")); d != "."; d = path.Dir(d) {
			if _, ok := m[d+"/"]; ok {
				break
			}
			if e, ok := m[d]; ok {
				return nil, fmt.Errorf("%s is inside %s, which is not a directory (%c)", n, d, e.typ)
			}
			m[d+"/"] = entry{name: d + "/", typ: tar.TypeDir, mode: 0o755}
		}
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]entry, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out, nil
}

// writeLayer writes the layer's uncompressed tar to file and returns it with its digest.
func writeLayer(file string, l Layer) (*blob, error) {
	entries, err := layerEntries(l)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	tw := tar.NewWriter(cw)
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &blob{file: file, digest: sum(h), size: cw.n}, nil
}

func sum(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
