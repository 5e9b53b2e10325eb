// Package snapshot keeps datastore snapshots in a directory: each file with
// its metadata (datastore kind, node, time, size, SHA-256) beside it, so that
// a file is checked before it is used and listed without being read.
package snapshot

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hakube/hakube/internal/fsutil"
)

// Meta describes one snapshot.
type Meta struct {
	Name       string    `json:"name"`
	Location   string    `json:"location"`
	Size       int64     `json:"size"`
	Created    time.Time `json:"created"`
	Node       string    `json:"node"`
	Datastore  string    `json:"datastore"`
	SHA256     string    `json:"sha256"`
	Compressed bool      `json:"compressed"`
}

// Dir is a directory of snapshots; metadata lives in Dir/.metadata.
type Dir string

func (d Dir) file(name string) string { return filepath.Join(string(d), name) }
func (d Dir) meta(name string) string { return filepath.Join(string(d), ".metadata", name+".json") }

// Name is a new snapshot's name: prefix, node and time, as K3s names them.
func Name(prefix, node string, t time.Time) string {
	return fmt.Sprintf("%s-%s-%d", prefix, node, t.Unix())
}

// Save writes r as snapshot m.Name (gzip-compressed if asked) and its
// metadata. Nothing is left behind if it fails.
func (d Dir) Save(m Meta, r io.Reader, compress bool) (Meta, error) {
	if m.Name == "" || strings.ContainsAny(m.Name, "/\\") || strings.HasPrefix(m.Name, ".") {
		return Meta{}, fmt.Errorf("invalid snapshot name %q", m.Name)
	}
	if compress && !strings.HasSuffix(m.Name, ".gz") {
		m.Name += ".gz"
	}
	if err := os.MkdirAll(filepath.Dir(d.meta(m.Name)), 0o700); err != nil {
		return Meta{}, err
	}
	path := d.file(m.Name)
	if fsutil.Exists(path) {
		return Meta{}, fmt.Errorf("a snapshot called %s already exists", m.Name)
	}
	tmp, err := os.CreateTemp(string(d), ".saving-*")
	if err != nil {
		return Meta{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	out := io.MultiWriter(tmp, h)
	var n int64
	if compress {
		zw := gzip.NewWriter(out)
		if _, err = io.Copy(zw, r); err == nil {
			err = zw.Close()
		}
	} else {
		_, err = io.Copy(out, r)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Meta{}, fmt.Errorf("writing snapshot %s: %w", m.Name, err)
	}
	if fi, err := os.Stat(tmp.Name()); err == nil {
		n = fi.Size()
	}
	m.Size, m.SHA256, m.Compressed, m.Location = n, hex.EncodeToString(h.Sum(nil)), compress, "file://"+path
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := fsutil.WriteFile(d.meta(m.Name), b, 0o600); err != nil {
		return Meta{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(d.meta(m.Name))
		return Meta{}, err
	}
	return m, nil
}

// List returns the snapshots, oldest first. A file without metadata is
// listed with what the file itself tells.
func (d Dir) List() ([]Meta, error) {
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		var m Meta
		if b, err := os.ReadFile(d.meta(e.Name())); err == nil && json.Unmarshal(b, &m) == nil {
			out = append(out, m)
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Meta{Name: e.Name(), Location: "file://" + d.file(e.Name()), Size: fi.Size(), Created: fi.ModTime().UTC(),
			Compressed: strings.HasSuffix(e.Name(), ".gz")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Verify checks a snapshot file against the hash in its metadata.
func (d Dir) Verify(name string) error {
	b, err := os.ReadFile(d.meta(name))
	if err != nil {
		return fmt.Errorf("snapshot %s has no metadata to check it against: %w", name, err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("metadata of snapshot %s: %w", name, err)
	}
	f, err := os.Open(d.file(name))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		return fmt.Errorf("snapshot %s is damaged: its SHA-256 is %s, its metadata says %s", name, got, m.SHA256)
	}
	return nil
}

// Delete removes snapshots and their metadata; every name must exist.
func (d Dir) Delete(names ...string) error {
	var errs []error
	for _, name := range names {
		if strings.ContainsAny(name, "/\\") || !fsutil.Exists(d.file(name)) {
			errs = append(errs, fmt.Errorf("no snapshot called %s in %s", name, d))
			continue
		}
		if err := os.Remove(d.file(name)); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(d.meta(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Prune deletes all but the newest keep snapshots whose names start with
// prefix ("" for all), and returns their names.
func (d Dir) Prune(prefix string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("retention %d: keep at least 1 snapshot", keep)
	}
	all, err := d.List()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range all {
		if strings.HasPrefix(m.Name, prefix) {
			names = append(names, m.Name)
		}
	}
	if len(names) <= keep {
		return nil, nil
	}
	names = names[:len(names)-keep]
	return names, d.Delete(names...)
}
