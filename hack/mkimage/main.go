// Command mkimage writes a single-layer OCI image layout as a tarball that
// `ctr images import` and the CRI accept. The output is deterministic: every
// entry has a fixed mtime and root ownership, so a rebuild is byte-identical.
//
//	mkimage -o out.tar -name docker.io/hakube/pause:3.10 -entrypoint /pause HOST=PATH...
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
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

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	out := flag.String("o", "", "output tarball")
	name := flag.String("name", "", "image name, e.g. docker.io/hakube/pause:3.10")
	var entrypoint, cmd list
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable)")
	flag.Var(&cmd, "cmd", "cmd argument (repeatable)")
	flag.Parse()
	if *out == "" || *name == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -o OUT.tar -name NAME [-entrypoint ARG]... [-cmd ARG]... HOST=PATH...")
		os.Exit(2)
	}
	if err := run(*out, *name, entrypoint, cmd, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, name string, entrypoint, cmd, files []string) error {
	layer, err := makeLayer(files)
	if err != nil {
		return err
	}
	image := map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if len(entrypoint) > 0 {
		image["Entrypoint"] = entrypoint
	}
	if len(cmd) > 0 {
		image["Cmd"] = cmd
	}
	config, _ := json.Marshal(map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": "amd64",
		"os":           "linux",
		"config":       image,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{digest(layer)}},
		"history":      []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "hakube mkimage"}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc("application/vnd.oci.image.config.v1+json", config),
		"layers":        []descriptor{desc("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	m := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	m.Platform = map[string]string{"architecture": "amd64", "os": "linux"}
	tag := name[strings.LastIndex(name, ":")+1:]
	if strings.Contains(tag, "/") {
		tag = "latest"
	}
	m.Annotations = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{m},
	})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	add(tw, "index.json", index, 0o644)
	add(tw, "blobs/", nil, 0o755)
	add(tw, "blobs/sha256/", nil, 0o755)
	for _, b := range [][]byte{layer, config, manifest} {
		add(tw, "blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b, 0o644)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	// Write then rename, so that a failed run leaves no target that make takes as up to date.
	if err := os.WriteFile(out+".tmp", buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

// makeLayer returns an uncompressed layer holding /tmp and each HOST=PATH pair,
// with every parent directory; files with any execute bit on the host get 0755.
func makeLayer(pairs []string) ([]byte, error) {
	files := map[string][]byte{}
	modes := map[string]int64{"tmp/": 0o1777}
	for _, p := range pairs {
		host, dst, ok := strings.Cut(p, "=")
		dst = strings.TrimPrefix(path.Clean("/"+dst), "/")
		if !ok || dst == "" {
			return nil, fmt.Errorf("bad pair %q: want HOST=PATH", p)
		}
		data, err := os.ReadFile(host)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(host)
		if err != nil {
			return nil, err
		}
		files[dst], modes[dst] = data, 0o644
		if st.Mode()&0o111 != 0 {
			modes[dst] = 0o755
		}
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			modes[d+"/"] = 0o755
		}
	}
	names := make([]string, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		add(tw, n, files[n], modes[n])
	}
	err := tw.Close()
	return buf.Bytes(), err
}

// add writes one entry owned by root with the fixed mtime; a name ending in / is a directory.
// Writes go to a bytes.Buffer, so the only possible errors are programming errors.
func add(tw *tar.Writer, name string, data []byte, mode int64) {
	h := &tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg,
		Uname: "root", Gname: "root"}
	if strings.HasSuffix(name, "/") {
		h.Typeflag = tar.TypeDir
	}
	if err := tw.WriteHeader(h); err != nil {
		panic(err)
	}
	if _, err := tw.Write(data); err != nil {
		panic(err)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func desc(mediaType string, b []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digest(b), Size: int64(len(b))}
}
